"""What the analysis finds: coupled channel groups and their member slices."""

from __future__ import annotations

from dataclasses import dataclass

KINDS = ("channels", "heads", "residual", "head_dim")
DEFAULT_KINDS = ("channels", "heads", "residual")


@dataclass(frozen=True)
class Member:
    """One dimension of one parameter or buffer that a group slices.

    ``shared`` members hold only the outer axis of a compound group (the k/v
    projections of a GQA layer): they lose an index only when every unit of it goes.
    """

    name: str
    dim: int
    role: str  # "parameter" | "buffer" | "constant"
    shared: bool = False

    def __str__(self) -> str:
        return f"{self.name}[{self.dim}]"


def weight_members(members: "tuple[Member, ...] | list[Member]") -> list[Member]:
    """The non-shared members that hold a unit's *weights*: what magnitude scores read and what makes a unit dead.

    Parameters (weights, biases, norm affines) are weights; buffers are state that is not trained
    (BatchNorm running statistics, counters) and constants are tables a model's definition fixes, so a
    unit whose parameters are zero is dead whatever its statistics say (``γ = β = 0`` zeroes a BatchNorm
    channel for any running variance).  A group with no parameter member (a model that keeps its weights
    in buffers or lifted constants) falls back to every non-shared member.
    """
    own = [m for m in members if not m.shared]
    params = [m for m in own if m.role == "parameter"]
    return params or own


@dataclass(frozen=True)
class Group:
    """A set of slices that must be removed together, unit by unit.

    ``axes`` are the atomic axes whose indices are the group's units: one axis,
    or two for grouped-query heads (``(kv_heads, queries_per_kv)``, unit =
    ``kv * queries_per_kv + q``).  A group with ``frozen`` reasons is not pruned.
    """

    id: int
    kind: str
    size: int
    axes: tuple[int, ...]
    members: tuple[Member, ...]
    frozen: tuple[str, ...] = ()
    # Units per outer index for compound groups (GQA): removal is even across them.
    blocks: int = 1
    params_per_unit: int = 0

    @property
    def prunable(self) -> bool:
        return not self.frozen

    @property
    def label(self) -> str:
        """A short human name: the first member slice."""
        return str(self.members[0]) if self.members else f"axis{self.axes[0]}"
