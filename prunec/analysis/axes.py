"""Axis algebra: the symbolic index spaces that coupled channel groups are made of.

Every dimension of every tensor in the traced graph gets a *layout*: a tuple of
segments, each segment a row-major product of *axes*.  Two dimensions that must
be pruned together share axes.  Layouts are refined lazily as ops reveal more
structure, e.g. ``view(linear_out, [b, s, heads, head_dim])`` refines the single
axis of ``linear_out``'s last dimension into the product ``(heads, head_dim)``;
``cat``/``split`` split an axis into concatenated segments.

A dimension of size 1 has the layout ``((),)`` (one segment, empty product):
it carries no axis, which is how broadcasting is modelled.

Pruning removes indices of *atomic* axes; because every tensor dimension is
expressed in terms of atomic axes, the exact index map of every member slice
follows from its layout (see :func:`kept_positions`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from math import prod

import numpy as np

Segment = tuple[int, ...]
Layout = tuple[Segment, ...]

UNIT: Layout = ((),)


class LayoutMismatch(Exception):
    """Two layouts could not be unified (non-divisible factors, unsupported refinement)."""


@dataclass
class _AxisInfo:
    size: int
    parent: int
    # A refined axis is replaced everywhere by this layout (of finer axes).
    expansion: Layout | None = None
    # Used as a non-leading factor of a product: it can then not be refined into
    # concatenated segments, because (a|b) x c is a concat but c x (a|b) is not.
    non_leading: bool = False
    tags: set[str] = field(default_factory=set)
    frozen: list[str] = field(default_factory=list)


class AxisTable:
    """Union-find over axes with lazy refinement into products and concatenations."""

    def __init__(self) -> None:
        self._axes: list[_AxisInfo] = []

    # -- creation and lookup -------------------------------------------------
    def new(self, size: int) -> int:
        axis = len(self._axes)
        self._axes.append(_AxisInfo(size=size, parent=axis))
        return axis

    def layout_for_size(self, size: int) -> Layout:
        """A fresh layout for a dimension of ``size`` elements (no segments for an empty dim)."""
        if size == 0:
            return ()
        return UNIT if size == 1 else ((self.new(size),),)

    def find(self, axis: int) -> int:
        root = axis
        while self._axes[root].parent != root:
            root = self._axes[root].parent
        while self._axes[axis].parent != root:  # path compression
            self._axes[axis].parent, axis = root, self._axes[axis].parent
        return root

    def size(self, axis: int) -> int:
        return self._axes[self.find(axis)].size

    def info(self, axis: int) -> _AxisInfo:
        return self._axes[self.find(axis)]

    def num_axes(self) -> int:
        return len(self._axes)

    # -- resolution ----------------------------------------------------------
    def resolve(self, layout: Layout) -> Layout:
        """Rewrite ``layout`` in terms of atomic root axes (no expansions left)."""
        out: list[Segment] = []
        for seg in layout:
            out.extend(self._resolve_segment(seg))
        return tuple(out)

    def _resolve_segment(self, seg: Segment) -> list[Segment]:
        segments: list[Segment] = [()]
        for pos, axis in enumerate(seg):
            root = self.find(axis)
            info = self._axes[root]
            if info.size == 1:
                continue
            if info.expansion is None:
                segments = [s + (root,) for s in segments]
                continue
            sub = self.resolve(info.expansion)
            if len(sub) == 1:
                segments = [s + sub[0] for s in segments]
            elif len(segments) == 1 and segments[0] == ():
                # Leading factor that is a concatenation: distribute the rest over it.
                segments = [tuple(s) for s in sub]
            else:
                raise LayoutMismatch("a concatenated axis is used as a non-leading factor")
        return segments

    def layout_size(self, layout: Layout) -> int:
        return sum(prod(self.size(a) for a in seg) for seg in layout)

    def note_layout(self, layout: Layout) -> None:
        """Record which axes are used as non-leading factors (see ``_AxisInfo``)."""
        for seg in self.resolve(layout):
            for axis in seg[1:]:
                self._axes[self.find(axis)].non_leading = True

    # -- refinement ----------------------------------------------------------
    def _refine_product(self, axis: int, leading_size: int) -> tuple[int, int]:
        """Split atomic ``axis`` into ``(a, b)`` with ``size(a) == leading_size``."""
        root = self.find(axis)
        info = self._axes[root]
        assert info.expansion is None and info.size % leading_size == 0
        a = self.new(leading_size)
        b = self.new(info.size // leading_size)
        self._axes[a].non_leading = info.non_leading
        self._axes[b].non_leading = True
        self._inherit(root, a)
        self._inherit(root, b)
        info.expansion = ((a, b),)
        return a, b

    def _refine_concat(self, axis: int, first_size: int) -> tuple[int, int]:
        """Split atomic ``axis`` into the concatenation ``a | b`` with ``size(a) == first_size``."""
        root = self.find(axis)
        info = self._axes[root]
        if info.non_leading:
            raise LayoutMismatch("cannot split an axis that is an inner factor of a product")
        a = self.new(first_size)
        b = self.new(info.size - first_size)
        self._inherit(root, a)
        self._inherit(root, b)
        info.expansion = ((a,), (b,))
        return a, b

    def _inherit(self, src: int, dst: int) -> None:
        self._axes[dst].tags |= self._axes[src].tags
        self._axes[dst].frozen.extend(self._axes[src].frozen)

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ia, ib = self._axes[ra], self._axes[rb]
        if ia.size != ib.size:
            raise LayoutMismatch(f"axis sizes differ: {ia.size} vs {ib.size}")
        assert ia.expansion is None and ib.expansion is None
        ib.parent = ra
        ia.tags |= ib.tags
        ia.frozen.extend(ib.frozen)
        ia.non_leading |= ib.non_leading

    def cut(self, layout: Layout, offsets: list[int]) -> Layout:
        """Refine ``layout`` so that a segment boundary falls at every offset in ``offsets``."""
        layout = self.resolve(layout)
        for off in sorted(set(offsets)):
            layout = self._cut_at(layout, off)
        return layout

    def _cut_at(self, layout: Layout, offset: int) -> Layout:
        start = 0
        for i, seg in enumerate(layout):
            size = prod(self.size(a) for a in seg)
            if offset == start or offset == start + size:
                return layout
            if start < offset < start + size:
                inner = prod(self.size(a) for a in seg[1:])
                rel = offset - start
                if rel % inner:
                    raise LayoutMismatch(f"offset {offset} does not align with the inner factors")
                lead = seg[0]
                steps = rel // inner
                # The leading factor may itself need a product split before the concat split.
                a, b = self._refine_concat(lead, steps)
                new = ((a,) + seg[1:], (b,) + seg[1:])
                return self.resolve(layout[:i] + new + layout[i + 1 :])
            start += size
        raise LayoutMismatch(f"offset {offset} outside the dimension")

    def unify(self, x: Layout, y: Layout) -> Layout:
        """Make two layouts of the same dimension size denote the same index space."""
        x, y = self.resolve(x), self.resolve(y)
        if x == y:
            return x
        sx, sy = self.layout_size(x), self.layout_size(y)
        if sx != sy:
            raise LayoutMismatch(f"sizes differ: {sx} vs {sy}")
        bounds = set(self._boundaries(x)) | set(self._boundaries(y))
        x, y = self.cut(x, list(bounds)), self.cut(y, list(bounds))
        # Size-1 segments carry no axis: pair up only the segments with units in them.
        xs, ys = self._drop_empty(x), self._drop_empty(y)
        if len(xs) != len(ys):
            raise LayoutMismatch("segment structure differs")
        for sa, sb in zip(xs, ys):
            self._unify_products(list(sa), list(sb))
        result = self.resolve(x)
        self.note_layout(result)
        return result

    def _drop_empty(self, layout: Layout) -> Layout:
        # Size-1 segments carry no axis; keep them only if the whole dim is size 1.
        kept = tuple(s for s in layout if prod(self.size(a) for a in s) != 1)
        return kept if kept else UNIT

    def _boundaries(self, layout: Layout) -> list[int]:
        out, off = [], 0
        for seg in layout:
            off += prod(self.size(a) for a in seg)
            out.append(off)
        return out[:-1]

    def _unify_products(self, xs: list[int], ys: list[int]) -> None:
        xs = [self.find(a) for a in xs if self.size(a) != 1]
        ys = [self.find(a) for a in ys if self.size(a) != 1]
        while xs and ys:
            a, b = self._atomic_head(xs), self._atomic_head(ys)
            sa, sb = self.size(a), self.size(b)
            if sa == sb:
                self.union(a, b)
                xs.pop(0)
                ys.pop(0)
            elif sa > sb and sa % sb == 0:
                lead, rest = self._refine_product(a, sb)
                self.union(lead, b)
                xs[0] = rest
                ys.pop(0)
            elif sb > sa and sb % sa == 0:
                lead, rest = self._refine_product(b, sa)
                self.union(lead, a)
                ys[0] = rest
                xs.pop(0)
            else:
                raise LayoutMismatch(f"factor sizes {sa} and {sb} do not divide")
        if xs or ys:
            raise LayoutMismatch("products of different sizes")

    def _atomic_head(self, factors: list[int]) -> int:
        """Expand the first factor until it is an atomic axis (products only)."""
        while True:
            root = self.find(factors[0])
            exp = self._axes[root].expansion
            if exp is None:
                factors[0] = root
                return root
            if len(exp) != 1:
                raise LayoutMismatch("a concatenated axis inside a product")
            factors[0:1] = [self.find(a) for a in exp[0] if self.size(a) != 1]

    # -- tags and freezing ---------------------------------------------------
    def tag(self, layout: Layout, tag: str) -> None:
        for seg in self.resolve(layout):
            for axis in seg:
                self._axes[self.find(axis)].tags.add(tag)

    def freeze(self, layout: Layout, reason: str) -> None:
        for seg in self.resolve(layout):
            for axis in seg:
                frozen = self._axes[self.find(axis)].frozen
                if reason not in frozen:
                    frozen.append(reason)

    def atoms(self, layout: Layout) -> list[int]:
        return [a for seg in self.resolve(layout) for a in seg]


def kept_positions(
    table: AxisTable,
    layout: Layout,
    kept_1d: dict[int, np.ndarray],
    kept_pairs: dict[tuple[int, int], np.ndarray],
) -> np.ndarray:
    """Indices (into a dimension with ``layout``) that survive the removal.

    ``kept_1d[axis]`` is a boolean mask over an atomic axis; ``kept_pairs[(a, b)]``
    a boolean matrix over two atomic axes that are removed jointly (GQA heads:
    KV-group x query-head-within-group).  Axes absent from both are kept whole.
    """
    masks = []
    for seg in table.resolve(layout):
        sizes = [table.size(a) for a in seg]
        n = prod(sizes)
        if not seg:
            masks.append(np.ones(1, dtype=bool))
            continue
        coords = np.unravel_index(np.arange(n), sizes)
        mask = np.ones(n, dtype=bool)
        for axis, coord in zip(seg, coords):
            if axis in kept_1d:
                mask &= kept_1d[axis][coord]
        for (a, b), pair in kept_pairs.items():
            if a in seg and b in seg:
                mask &= pair[coords[seg.index(a)], coords[seg.index(b)]]
            elif a in seg:
                # Only the outer axis is present (k/v projections): it goes when all its inner units go.
                mask &= pair.any(axis=1)[coords[seg.index(a)]]
        masks.append(mask)
    return np.flatnonzero(np.concatenate(masks))


def new_size(table: AxisTable, layout: Layout, new_axis_size: dict[int, int]) -> int:
    """Size of a dimension with ``layout`` once atomic axes take ``new_axis_size``."""
    total = 0
    for seg in table.resolve(layout):
        total += prod(new_axis_size.get(a, table.size(a)) for a in seg)
    return total
