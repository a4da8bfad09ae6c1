"""Weight storage of ONNX artefacts: every weight stored once, and weight-only quantisation.

Tied weights. A language model whose LM head reuses the token embedding (SmolLM2, Llama with
``tie_word_embeddings``) holds one parameter, but its ONNX file ends up with two: the embedding table
``E`` [vocab, hidden] read by ``Gather``, and the LM head's pre-transposed ``E^T`` [hidden, vocab]
read by ``MatMul`` (113 MB each for SmolLM2). ``torch.onnx.export`` folds the transpose into a
second initialiser for small tables; for large ones it leaves ``MatMul(x, Transpose(E))``, which
ONNX Runtime's offline optimisation then folds into the same second copy. :func:`share_tied_weights` keeps only
``E^T`` and gathers embedding rows as its columns (``Gather(E^T, ids, axis=1)`` then a ``Transpose``
of the [hidden, *ids] result): standard ops, no constant a runtime could fold back into a second copy,
and the LM head's ``MatMul`` keeps its fast layout. Byte-identical initialisers are merged by
onnx-ir's ``DeduplicateHashedInitializersPass`` first.

Weight-only quantisation (:func:`quantize_weights`). LLM activations have outliers that per-tensor
activation quantisation (``--quantize dynamic``) does not survive; quantising only the weights, in
blocks along the reduction axis with one scale (and zero point) per block, keeps activations in
float. ONNX Runtime's ``MatMulNBitsQuantizer`` turns each ``MatMul`` with a constant 2-D weight into
the ``com.microsoft`` ``MatMulNBits`` op (4 or 8 bits; ORT's CPU kernels, MLAS, cover x86-64 and
ARM64). Its own ``Gather`` quantisation (``GatherBlockQuantized``) is 4-bit only and would quantise
a tied table a second time, so after quantisation :func:`gather_from_quantized` rewrites the shared
embedding ``Gather`` to read rows of the LM head's quantised weight and dequantise them with standard
ops: the tied table stays stored once, at the chosen width.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from prunec.errors import ConfigError

@dataclass(frozen=True)
class WeightQuantization:
    """One weight-only scheme of ``MatMulNBits``: ``bits`` per weight, one float scale (and, unless
    ``symmetric``, one zero point) per ``block_size`` consecutive weights along the reduction axis."""

    bits: int
    block_size: int
    symmetric: bool = False
    algorithm: str = "rtn"          # rtn: round to nearest (ORT's default quantiser); hqq: half-quadratic
    tied_bits: int | None = None    # bits of an LM head whose table is tied to the embedding (None: ``bits``)

    def __post_init__(self) -> None:
        if self.bits not in (4, 8) or self.tied_bits not in (None, 4, 8):
            raise ConfigError(f"weight-only quantisation takes 4 or 8 bits, not {self.bits}/{self.tied_bits}")
        if self.algorithm not in ("rtn", "hqq"):
            raise ConfigError(f"unknown weight quantisation algorithm '{self.algorithm}'; choose rtn or hqq")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise ConfigError(f"block size {self.block_size} must be a power of two >= 16 (MatMulNBits)")


# The weight-only ``--quantize`` modes, chosen by measurement (SmolLM2-135M pruned to 80%, WikiText-2
# perplexity, benchmarks/README.md). Blocks of 64 divide SmolLM2's hidden width (576), blocks of 32
# also most pruned widths: ``MatMulNBits`` pads every column to whole blocks. 8 bits lose nothing
# measurable. At 4 bits, round-to-nearest cost the most perplexity; HQQ (half-quadratic optimisation
# of each block's scale and zero point, no calibration data; float zero points) and the tied
# embedding / LM head kept at 8 bits each recovered part of it, together the most (8-bit weights are
# always round-to-nearest: ORT's CPU kernel takes no float zero points at 8 bits).
WEIGHT_ONLY_MODES: dict[str, WeightQuantization] = {
    "int8-weights": WeightQuantization(bits=8, block_size=64),
    "int4-weights": WeightQuantization(bits=4, block_size=32, algorithm="hqq", tied_bits=8),
    "int4-weights-rtn": WeightQuantization(bits=4, block_size=32),
}


def dedupe_identical(model: Any) -> None:
    """Merge byte-identical initialisers (onnx-ir's pass; ``model`` is an ``onnx_ir.Model``)."""
    from onnx_ir.passes.common import DeduplicateHashedInitializersPass

    DeduplicateHashedInitializersPass()(model)


def _initializer_array(value: Any) -> np.ndarray | None:
    if value is None or not value.is_initializer() or value.const_value is None:
        return None
    return value.const_value.numpy()


def _int_attr(node: Any, name: str, default: int) -> int:
    attr = node.attributes.get(name)
    return default if attr is None else int(attr.as_int())


def _lm_head_weight(weight: Any) -> np.ndarray | None:
    """The constant [K, N] weight of a ``MatMul``: an initialiser, or a 2-D ``Transpose`` of one (the
    exporter leaves ``Transpose(E)`` unfolded for tables above its folding size limit, SmolLM2's
    included; ONNX Runtime would fold it into a second copy when it optimises the file)."""
    array = _initializer_array(weight)
    if array is not None:
        return array
    producer = weight.producer() if weight is not None else None
    if producer is None or producer.op_type != "Transpose" or producer.domain != "":
        return None
    source = _initializer_array(producer.inputs[0])
    perm = producer.attributes.get("perm")
    if source is None or source.ndim != 2 or (perm is not None and list(perm.as_ints()) != [1, 0]):
        return None
    return source.T


def _as_initializer(graph: Any, matmul: Any, array: np.ndarray, name: str) -> Any:
    """The ``MatMul``'s weight as an initialiser (folding a ``Transpose`` of one, then dropping it)."""
    import onnx_ir as ir

    weight = matmul.inputs[1]
    if weight.is_initializer():
        return weight
    transpose = weight.producer()
    tensor = ir.tensor(np.ascontiguousarray(array), name=name)
    value = ir.Value(name=name, shape=tensor.shape, type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    matmul.replace_input_with(1, value)
    if not weight.uses():
        graph.remove(transpose, safe=True)
    return value


def share_tied_weights(model: Any) -> dict[str, str]:
    """Store a tied embedding once: ``Gather(E, ids)`` beside ``MatMul(x, E^T)`` becomes
    ``Transpose(Gather(E^T, ids, axis=1))`` and ``E`` is dropped.

    Only exact ties are rewritten: ``E^T`` must equal the transpose of ``E`` element for element.
    Returns ``{embedding output name: LM head output name}`` for every table shared (value names
    survive ONNX Runtime's quantiser, which is how :func:`gather_from_quantized` finds the pair again).
    """
    import onnx_ir as ir

    graph = model.graph
    lm_heads: dict[tuple[tuple[int, ...], str], list[tuple[Any, np.ndarray]]] = {}
    for node in graph:
        if node.op_type == "MatMul" and node.domain == "" and len(node.inputs) == 2:
            array = _lm_head_weight(node.inputs[1])
            if array is not None and array.ndim == 2:
                lm_heads.setdefault((array.shape, str(array.dtype)), []).append((node, array))
    shared: dict[str, str] = {}
    for node in list(graph):
        if node.op_type != "Gather" or node.domain != "" or _int_attr(node, "axis", 0) != 0:
            continue
        table, ids = node.inputs[0], node.inputs[1]
        array = _initializer_array(table)
        if array is None or array.ndim != 2 or ids is None or ids.shape is None:
            continue
        match = next((pair for pair in lm_heads.get((array.shape[::-1], str(array.dtype)), [])
                      if np.array_equal(pair[1], array.T)), None)
        if match is None:
            continue
        lm_head, head_array = match
        transposed = _as_initializer(graph, lm_head, head_array, f"{table.name}_transposed")
        rank = len(ids.shape)
        columns = ir.node("Gather", [transposed, ids], {"axis": 1}, name=f"{node.name}_columns")
        rows = ir.node("Transpose", [columns.outputs[0]], {"perm": [*range(1, rank + 1), 0]},
                       name=f"{node.name}_rows")
        ir.convenience.replace_nodes_and_values(graph, node, [node], [columns, rows], node.outputs, rows.outputs)
        if not table.uses():
            graph.initializers.pop(table.name)
        shared[rows.outputs[0].name] = lm_head.outputs[0].name
    return shared


def _dequantized_rows(matmul: Any, ids: Any, dtype: Any, prefix: str) -> tuple[list[Any], Any]:
    """Nodes that gather rows ``ids`` of a ``MatMulNBits`` weight and dequantise them to ``dtype``
    (float rows [*ids, K]), with standard ONNX ops only. The weight is stored [N, blocks, bytes per
    block]: row n of it is column n of the original [K, N] weight, i.e. one embedding row."""
    import onnx_ir as ir

    bits, block, k = (_int_attr(matmul, "bits", 4), _int_attr(matmul, "block_size", 0), _int_attr(matmul, "K", 0))
    weight, scales = matmul.inputs[1], matmul.inputs[2]
    zero_points = matmul.inputs[3] if len(matmul.inputs) > 3 else None
    blocks = (k + block - 1) // block
    nodes: list[Any] = []

    def add(op: str, inputs: list[Any], attributes: dict[str, Any] | None = None) -> Any:
        name = f"{prefix}_{len(nodes)}_{op.lower()}"
        nodes.append(ir.node(op, inputs, attributes, name=name, outputs=[ir.Value(name=name)]))
        return nodes[-1].outputs[0]

    def const(name: str, array: np.ndarray) -> Any:
        return add("Constant", [], {"value": ir.tensor(array, name=f"{prefix}_{name}")})

    def unpack_nibbles(packed: Any, keep: int) -> Any:
        """Two 4-bit values a byte, the first in the low nibble (the MatMulNBits layout); the
        result keeps the first ``keep`` axes and unpacks the rest into the last one."""
        low = add("BitwiseAnd", [packed, const("low_mask", np.array(15, np.uint8))])
        high = add("BitShift", [packed, const("shift", np.array(4, np.uint8))], {"direction": "RIGHT"})
        axis = const("last_axis", np.array([-1], np.int64))
        pairs = add("Concat", [add("Unsqueeze", [low, axis]), add("Unsqueeze", [high, axis])], {"axis": -1})
        return add("Reshape", [pairs, const("unpacked", np.array([0] * keep + [-1], np.int64))])

    def gather_blocks(value: Any) -> Any:
        """Rows ``ids`` of a per-block tensor stored [N, blocks] or flat [N * blocks] (indexed as
        ``ids * blocks + b``: reshaping the initialiser instead would be folded into a copy)."""
        if value.shape is not None and len(value.shape) == 2:
            return add("Gather", [value, ids], {"axis": 0})
        ids64 = add("Cast", [ids], {"to": ir.DataType.INT64})
        first = add("Unsqueeze", [add("Mul", [ids64, const("blocks", np.array(blocks, np.int64))]),
                                  const("ids_axis", np.array([-1], np.int64))])
        return add("Gather", [value, add("Add", [first, const("block_index", np.arange(blocks, dtype=np.int64))])],
                   {"axis": 0})

    quantized = add("Gather", [weight, ids], {"axis": 0})                    # [*ids, blocks, bytes]
    if bits == 4:
        quantized = unpack_nibbles(quantized, len(ids.shape) + 1)             # [*ids, blocks, block]
    values = add("Cast", [quantized], {"to": dtype})
    row_scales = add("Unsqueeze", [gather_blocks(scales), const("block_axis", np.array([-1], np.int64))])
    if zero_points is None:                                                 # [*ids, blocks, 1]
        row_zero = const("zero", np.array(1 << (bits - 1), dtype=ir.DataType(dtype).numpy()))
    elif zero_points.dtype != ir.DataType.UINT8:  # float zero points (HQQ), one per block
        row_zero = add("Unsqueeze", [gather_blocks(zero_points), const("zero_axis", np.array([-1], np.int64))])
    else:
        zeros = add("Gather", [zero_points, ids], {"axis": 0})               # [*ids, packed blocks]
        if bits == 4:
            zeros = add("Slice", [unpack_nibbles(zeros, len(ids.shape)), const("zero_start", np.array([0], np.int64)),
                                  const("zero_end", np.array([blocks], np.int64)),
                                  const("zero_axes", np.array([-1], np.int64))])
        row_zero = add("Cast", [add("Unsqueeze", [zeros, const("zero_axis", np.array([-1], np.int64))])], {"to": dtype})
    rows = add("Mul", [add("Sub", [values, row_zero]), row_scales])          # [*ids, blocks, block]
    rows = add("Reshape", [rows, const("row_shape", np.array([0] * len(ids.shape) + [-1], np.int64))])
    if blocks * block != k:  # MatMulNBits pads K to whole blocks
        rows = add("Slice", [rows, const("row_start", np.array([0], np.int64)),
                             const("row_end", np.array([k], np.int64)), const("row_axes", np.array([-1], np.int64))])
    return nodes, rows


def gather_from_quantized(model: Any, ties: dict[str, str]) -> int:
    """After weight-only quantisation: point every shared-embedding gather (``ties``, from
    :func:`share_tied_weights`) at the LM head's quantised weight, so that the float table is dropped.
    Returns the number of gathers rewritten."""
    import onnx_ir as ir

    graph = model.graph
    producers = {out.name: node for node in graph for out in node.outputs}
    rewritten = 0
    for embedding_output, head_output in ties.items():
        transpose, matmul = producers.get(embedding_output), producers.get(head_output)
        gather = transpose.inputs[0].producer() if transpose is not None and transpose.op_type == "Transpose" else None
        if matmul is None or matmul.op_type != "MatMulNBits" or gather is None or gather.op_type != "Gather":
            continue
        table, ids = gather.inputs[0], gather.inputs[1]
        nodes, rows = _dequantized_rows(matmul, ids, table.dtype, gather.name or "tied_embedding")
        ir.convenience.replace_nodes_and_values(graph, gather, [gather, transpose], nodes, transpose.outputs, [rows])
        if not table.uses() and table.name in graph.initializers:
            graph.initializers.pop(table.name)
        rewritten += 1
    return rewritten


def store_weights_once(path: Path) -> dict[str, str]:
    """Rewrite the ONNX file at ``path`` so that every weight is stored once (identical initialisers
    merged, tied embeddings shared, checked with ``onnx.checker``); returns the ties (see
    :func:`share_tied_weights`)."""
    import onnx
    import onnx_ir as ir

    model = ir.load(str(path))
    dedupe_identical(model)
    ties = share_tied_weights(model)
    ir.save(model, str(path))
    onnx.checker.check_model(str(path))
    return ties


def _nbits_quantizer() -> Any:
    """ORT's ``MatMulNBitsQuantizer`` class. Its module calls ``logging.basicConfig(level=INFO)`` on
    import, which would make every library in the process log at INFO; the root logger is restored."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    return MatMulNBitsQuantizer


def quantize_weights(src: Path, dst: Path, scheme: WeightQuantization, ties: dict[str, str]) -> None:
    """Weight-only quantisation of every ``MatMul`` with a constant 2-D weight (``MatMulNBits``), the
    tied embeddings (``ties``) then read from the quantised LM head (:func:`gather_from_quantized`)."""
    import onnx
    import onnx_ir as ir

    model = onnx.load(str(src))
    heads = {node.name for node in model.graph.node if set(node.output) & set(ties.values())}
    tied_bits = scheme.tied_bits or scheme.bits
    # The tied LM head at its own width: every other MatMul first, then (MatMulNBits being no MatMul)
    # the only constant-weight MatMul left is the head.
    passes = [(scheme.bits, heads if tied_bits != scheme.bits else set())]
    if tied_bits != scheme.bits and heads:
        passes.append((tied_bits, set()))
    for bits, excluded in passes:
        quantizer = _nbits_quantizer()(model, bits=bits, block_size=scheme.block_size, is_symmetric=scheme.symmetric,
                                       op_types_to_quantize=("MatMul",), nodes_to_exclude=sorted(excluded),
                                       algo_config=_algorithm_config(scheme, bits))
        with warnings.catch_warnings():
            # HQQ hands read-only initialiser arrays to torch.from_numpy; it only reads them.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            quantizer.process()
        model = quantizer.model.model
    ir_model = ir.from_proto(model)
    gather_from_quantized(ir_model, ties)
    ir.save(ir_model, str(dst))


def _algorithm_config(scheme: WeightQuantization, bits: int) -> Any:
    """ORT's configuration object for ``scheme.algorithm`` at ``bits`` (None: the quantiser's
    default, round to nearest). HQQ stores float zero points, which ORT's CPU ``MatMulNBits`` kernel
    refuses at 8 bits, so 8-bit weights are always rounded to nearest."""
    if scheme.algorithm == "rtn" or bits == 8:
        return None
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig

    _nbits_quantizer()  # imports the module with the root logger restored
    return HQQWeightOnlyQuantConfig(block_size=scheme.block_size, bits=bits, op_types_to_quantize=("MatMul",))
