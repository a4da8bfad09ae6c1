"""One table, not two, for a tied embedding and LM head in a TVM library.

With tied word embeddings the exported program reads one weight ``W`` (vocab × hidden) twice: the
embedding gathers rows of it (``take(W, ids, axis=0)``) and the LM head multiplies by its transpose
(``matmul(h, permute_dims(W))``). Relax's constant folding turns ``permute_dims(W)`` into a second,
transposed constant, so the library held the table twice (SmolLM2-135M: 113 MB more in a 566 MB
library). :func:`share_tied_tables` makes the embedding gather columns of the transposed table
instead (``permute_dims(take(permute_dims(W), ids, axis=1))``); common-subexpression elimination then
leaves a single ``permute_dims(W)``, which folds into the one table both read. The gather reads one
strided column per token, a negligible cost beside the matmul.

Dlight builds keep one table. MetaSchedule builds prepack the LM head's weight into the tuned
kernel's blocked layout, a constant of its own, so they hold the table twice again (SmolLM2: 651.9
against 538.5 MB; docs/tvm.md).
"""

from __future__ import annotations

from typing import Any


def _is_row_gather(call: Any) -> bool:
    return _op_name(call) == "relax.take" and call.attrs.axis is not None and int(call.attrs.axis) == 0


def _is_transpose_2d(call: Any) -> bool:
    axes = call.attrs.axes
    return axes is None or [int(a) for a in axes] == [1, 0]


def _op_name(expr: Any) -> str:
    import tvm
    from tvm import relax

    if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
        return str(expr.op.name)
    return ""


def tied_tables(module: Any) -> list[Any]:
    """The 2-D constants of ``main`` that are both gathered by row and transposed."""
    import tvm
    from tvm import relax

    gathered: list[Any] = []
    transposed: list[Any] = []

    @relax.expr_functor.visitor
    class _Uses(relax.PyExprVisitor):
        def visit_call_(self, call: Any) -> None:
            super().visit_call_(call)
            name, table = _op_name(call), call.args[0] if call.args else None
            if not isinstance(table, tvm.ir.expr.Constant) or getattr(table.ty, "ndim", -1) != 2:
                return
            if _is_row_gather(call):
                gathered.append(table)
            elif name == "relax.permute_dims" and _is_transpose_2d(call):
                transposed.append(table)

    _Uses().visit_expr(module["main"])
    return [c for c in gathered if any(c.same_as(t) for t in transposed)]


def share_tied_tables(module: Any) -> Any:
    """``module`` with every tied table gathered from its transpose (see the module docstring);
    unchanged when ``main`` has none."""
    from tvm import relax

    tied = tied_tables(module)
    if not tied:
        return module

    @relax.expr_functor.mutator
    class _GatherColumns(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not _is_row_gather(call):
                return call
            table, indices = call.args
            if not any(table.same_as(c) for c in tied):
                return call
            columns = relax.op.take(relax.op.permute_dims(table, [1, 0]), indices, axis=1, mode=str(call.attrs.mode))
            rank = int(indices.ty.ndim)
            # take over axis 1 gives (hidden, *indices.shape): move hidden back to the end.
            return relax.op.permute_dims(columns, [*range(1, rank + 1), 0])

    mutator = _GatherColumns(module)
    main = module.get_global_var("main")
    mutator.builder_.update_func(main, mutator.visit_expr(module["main"]))
    return relax.transform.EliminateCommonSubexpr()(mutator.builder_.get())
