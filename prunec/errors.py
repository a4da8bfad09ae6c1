"""The exception hierarchy: every error prunec raises on purpose is a :class:`PruneError`.

Each carries a one-line message that names the problem and what to do about it;
the CLI prints that line and exits with the class's ``exit_code``.
"""

from __future__ import annotations


class PruneError(Exception):
    """Base class of all errors raised deliberately by prunec."""

    exit_code: int = 1


class ConfigError(PruneError, ValueError):
    """An argument or option is invalid (ratio out of range, unknown kind, ...)."""

    exit_code = 2


class ModelLoadError(PruneError):
    """A model could not be found or loaded."""

    exit_code = 3


class TraceError(PruneError):
    """The model could not be traced into an FX graph."""

    exit_code = 4


class TransformError(PruneError):
    """The pruned graph failed its own checks (shape re-propagation, numerics)."""

    exit_code = 5


class OutputExistsError(PruneError):
    """The output path already exists and would be overwritten."""

    exit_code = 6


class RegressionError(PruneError):
    """A pruned model regressed beyond the tolerance given to ``prunec check``."""

    exit_code = 7


class TargetError(PruneError):
    """A target preset is unknown or malformed."""

    exit_code = 8


class ToolchainError(PruneError):
    """A tool a target needs (backend package, cross compiler, emulator) is missing or failed."""

    exit_code = 9


class VerificationError(PruneError):
    """A compiled artefact's outputs differ from the PyTorch reference beyond the tolerance."""

    exit_code = 10


class UnsafeModelError(PruneError):
    """Loading a model file would execute code the user did not explicitly ask to run."""

    exit_code = 11
