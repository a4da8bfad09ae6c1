"""A dlight-style CPU schedule rule for the tasks TVM 0.27 ships none for: conv2d and matmul.

TVM 0.27's CPU dlight rules cover GEMV and row reductions only, so every convolution and matrix
multiplication of a CNN stays a naive single-threaded loop nest. :class:`TiledReduction` gives any
fused task with one "spatial loops, then reduction loops" block (conv2d, dense, batched matmul) the
classic CPU schedule, with fixed sizes instead of a search:

* inline the injective producers (padding) into the reduction and chain the epilogue (bias,
  batch-norm arithmetic, ReLU, residual add) into one block;
* tile: an outer band of spatial loops, fused and parallel; then the reduction loops; then a
  register tile of ``rows`` x ``lanes`` outputs (``rows`` from an outer spatial axis such as the
  output channel, ``lanes`` the vector width along the innermost, contiguous, axis), accumulated in a
  local buffer with the innermost axis vectorised;
* compute the epilogue right after each outer tile, while its outputs are in cache.

Standalone element-wise tasks (explicit padding, reshapes) get one parallel, vectorised loop nest.
"""

from __future__ import annotations

from typing import Any

REGISTER_ROWS = 4  # rows x lanes accumulators: 4 x (2 vectors) fits the 16 AVX2 / 32 NEON registers


def _divisor_at_most(extent: int, limit: int) -> int:
    return max(d for d in range(1, min(extent, limit) + 1) if extent % d == 0)


def vector_tile(extent: int, lanes: int) -> int:
    """Outputs per register row along the contiguous axis: whole vectors where the extent allows."""
    for width in (2 * lanes, lanes):
        if extent % width == 0:
            return width
    if extent <= 2 * lanes:
        return extent  # a short row (7, 14): one tile, LLVM splits the odd vector
    return _divisor_at_most(extent, 2 * lanes)


def make_rule() -> Any:
    """The rule as a ``tvm.s_tir.dlight`` ScheduleRule (built lazily: TVM is an optional dependency)."""
    from tvm import s_tir, tirx
    from tvm.s_tir.dlight.cpu.base import CPUScheduleRule
    from tvm.target.codegen import llvm_get_vector_width

    class TiledReduction(CPUScheduleRule):
        """Parallel outer tiles, register-blocked and vectorised inner tile (see the module docstring)."""

        def apply(self, func: tirx.PrimFunc, target: Any, _tunable: bool) -> s_tir.Schedule | None:
            if not isinstance(func, tirx.PrimFunc) or not self.is_target_available(target):
                return None
            try:
                return _schedule(s_tir.Schedule(func), target)
            except Exception:  # noqa: BLE001 - a pattern this rule does not fit: leave it to the next rule
                return None

    def _kinds(sch: s_tir.Schedule, block: Any) -> str:
        return "".join({tirx.IterVar.DataPar: "S", tirx.IterVar.CommReduce: "R"}.get(v.iter_type, "O")
                       for v in sch.get(block).iter_vars)

    def _extent(sch: s_tir.Schedule, loop: Any) -> int | None:
        extent = sch.get(loop).extent
        return int(extent) if isinstance(extent, tirx.IntImm) else None

    def _schedule(sch: s_tir.Schedule, target: Any) -> s_tir.Schedule | None:
        blocks = sch.get_child_blocks(sch.get_sblock("root"))
        kinds = [_kinds(sch, b) for b in blocks]
        reductions = [i for i, k in enumerate(kinds) if "R" in k]
        if not reductions and all(k and set(k) == {"S"} for k in kinds):
            return _injective(sch, blocks, target)
        if len(reductions) != 1:
            return None
        index = reductions[0]
        main, kind = blocks[index], kinds[index]
        spatial = len(kind) - len(kind.lstrip("S"))
        if spatial == 0 or kind[spatial:].strip("R") or spatial + kind[spatial:].count("R") != len(kind):
            return None
        # Producers (zero padding) stay separate passes: inlined, their bounds checks would sit in the
        # innermost vector loop.
        for producer in blocks[:index]:
            _parallel_vectorize(sch, producer, lanes_of(sch, producer, target))
        epilogue = blocks[index + 1:]
        for block in epilogue[:-1]:
            sch.compute_inline(block)
        loops = sch.get_loops(main)
        if len(loops) != len(kind):
            return None
        extents = [_extent(sch, loop) for loop in loops]
        if any(e is None for e in extents):
            return None  # dynamic shapes: not this rule's job
        lanes = lanes_of(sch, main, target)
        s_loops, r_loops = loops[:spatial], loops[spatial:]
        vec_extent = extents[spatial - 1]
        vec = vector_tile(vec_extent, lanes)
        vec_outer, vec_inner = sch.split(s_loops[-1], factors=[None, vec])
        row_axis = next((i for i in range(spatial - 1) if extents[i] >= REGISTER_ROWS), None)
        outer = list(s_loops[:-1])
        inner = [vec_inner]
        if row_axis is not None:
            rows = _divisor_at_most(extents[row_axis], REGISTER_ROWS)
            row_outer, row_inner = sch.split(s_loops[row_axis], factors=[None, rows])
            outer[row_axis] = row_outer
            inner = [row_inner, vec_inner]
        outer.append(vec_outer)
        sch.reorder(*outer, *r_loops, *inner)
        tile = outer[-1]
        # Accumulate the register tile in a local buffer, write it back, then run the epilogue on it.
        local = sch.cache_write(main, 0, "local")
        sch.reverse_compute_at(local, tile, preserve_unit_loops=True)
        _vectorize_innermost(sch, local, lanes)
        if epilogue:
            sch.reverse_compute_at(epilogue[-1], tile, preserve_unit_loops=True)
            _vectorize_innermost(sch, epilogue[-1], lanes)
        sch.parallel(sch.fuse(*outer[:-1]) if len(outer) > 2 else outer[0])
        if row_axis is not None:
            sch.unroll(inner[0])
        sch.vectorize(inner[-1])
        init = sch.decompose_reduction(main, r_loops[0])
        _vectorize_innermost(sch, init, lanes)
        return sch

    def _injective(sch: s_tir.Schedule, blocks: list[Any], target: Any) -> s_tir.Schedule:
        """Standalone element-wise tasks (padding, reshape, transpose): one parallel, vectorised pass."""
        for block in blocks[:-1]:
            sch.compute_inline(block)
        _parallel_vectorize(sch, blocks[-1], lanes_of(sch, blocks[-1], target))
        return sch

    def lanes_of(sch: s_tir.Schedule, block: Any, target: Any) -> int:
        """Vector lanes of the target for the block's output dtype (at least 128-bit vectors)."""
        bits = sch.get(block).writes[0].source.dtype.bits
        return max(2, max(llvm_get_vector_width(target), 128) // bits)

    def _parallel_vectorize(sch: s_tir.Schedule, block: Any, lanes: int) -> None:
        loops = sch.get_loops(block)
        if len(loops) > 1:
            sch.parallel(sch.fuse(*loops[:-1]) if len(loops) > 2 else loops[0])
        _vectorize_innermost(sch, block, lanes)

    def _vectorize_innermost(sch: s_tir.Schedule, block: Any, lanes: int) -> None:
        loop = sch.get_loops(block)[-1]
        extent = _extent(sch, loop)
        if extent and extent > 1:
            if extent > 2 * lanes:
                loop = sch.split(loop, factors=[None, _divisor_at_most(extent, 2 * lanes)])[1]
            sch.vectorize(loop)

    return TiledReduction()
