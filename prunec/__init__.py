"""prunec: structured pruning as a compiler pipeline (trace -> analyse -> transform -> lower -> verify).

The Python API in three calls::

    import prunec
    gm = prunec.trace(model, example_inputs)                  # ATen-level FX graph
    analysis = prunec.analyze(model, example_inputs)          # coupled channel groups
    result = prunec.prune(model, example_inputs, ratio=0.3)   # a smaller, runnable module
"""

from prunec.analysis.analyze import Analysis
from prunec.analysis.groups import DEFAULT_KINDS, KINDS, Group, Member
from prunec.errors import (ConfigError, ModelLoadError, OutputExistsError, PruneError, TraceError, TransformError,
                           UnsafeModelError)
from prunec.module import export_program
from prunec.prune import PruneResult, analyze, prune
from prunec.trace import trace

__version__ = "0.1.0"

__all__ = [
    "Analysis",
    "ConfigError",
    "DEFAULT_KINDS",
    "Group",
    "KINDS",
    "Member",
    "ModelLoadError",
    "OutputExistsError",
    "PruneError",
    "PruneResult",
    "TraceError",
    "TransformError",
    "UnsafeModelError",
    "analyze",
    "export_program",
    "prune",
    "trace",
]
