"""Corrections to what TVM 0.27's PyTorch importer produces, applied right after the import.

Each fix is a Relax rewrite that restores PyTorch's semantics where the importer departs from them,
registered in ``IMPORT_FIXES`` by Relax op name (data, not substring dispatch). Run with
:func:`fix_imported_module`; it returns the module unchanged when no fix applies.

``cumsum`` of a bool or small-integer tensor: PyTorch accumulates in int64 (``torch.cumsum`` on
``bool``/``int32`` returns ``int64``), while the importer keeps the input dtype. On bool that is both
wrong (a running count saturates at ``True``) and unbuildable: LLVM codegen is asked to add two
``i1`` values and aborts with ``CodeGenLLVM::CreateAdd: Check failed: t.MatchesCode(kDLFloat)``.
Hugging Face LLaMA-family models hit this in their causal mask (``cumsum`` over ``position_ids``
differences, to find packed sequences), so SmolLM2 did not build on TVM before this fix.
"""

from __future__ import annotations

from typing import Any, Callable

# PyTorch promotes these to int64 in cumsum/cumprod when no dtype is given.
_PROMOTED_TO_INT64 = frozenset({"bool", "int8", "int16", "int32", "uint8"})


def _dtype(expr: Any) -> str:
    """The element type of a Relax tensor expression, or '' for anything else."""
    dtype = getattr(getattr(expr, "ty", None), "dtype", None)
    return str(dtype) if dtype is not None else ""


def _cumsum_in_int64(call: Any) -> Any | None:
    from tvm import relax

    data = call.args[0]
    if call.attrs.dtype is not None or _dtype(data) not in _PROMOTED_TO_INT64:
        return None
    return relax.op.cumsum(relax.op.astype(data, "int64"), axis=call.attrs.axis, dtype="int64",
                           exclusive=bool(call.attrs.exclusive))


# Relax op name -> rewrite returning the corrected call, or None when the call is already right.
IMPORT_FIXES: dict[str, Callable[[Any], Any | None]] = {
    "relax.cumsum": _cumsum_in_int64,
}


def fix_imported_module(module: Any) -> Any:
    """``module`` with every ``IMPORT_FIXES`` rewrite applied to its Relax functions."""
    import tvm
    from tvm import relax

    @relax.expr_functor.mutator
    class _Fixer(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            fix = IMPORT_FIXES.get(call.op.name) if isinstance(call.op, tvm.ir.Op) else None
            fixed = fix(call) if fix else None
            return fixed if fixed is not None else call

    fixer = _Fixer(module)
    for var, function in module.functions_items():
        if isinstance(function, relax.Function):
            fixer.builder_.update_func(var, fixer.visit_expr(function))
    return fixer.builder_.get()
