"""Op rules, one family per module; importing this package registers them all."""

from prunec.rules import (  # noqa: F401  (imported for their registrations)
    attention,
    complex,
    concat,
    conv,
    creation,
    einsum,
    embedding,
    indexing,
    linear,
    moe,
    norm,
    pointwise,
    reduction,
    reshape,
    routing,
    split,
    symbolic,
)
from prunec.rules.registry import Rule, lookup_rule, register_rule, registered_targets

__all__ = ["Rule", "lookup_rule", "register_rule", "registered_targets"]
