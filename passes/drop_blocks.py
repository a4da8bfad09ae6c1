"""Depth pruning: remove whole residual blocks (transformer layers, ResNet stages' blocks) by index.

A block is the set of nodes that ``torch.export`` attributes to one element of a module
list (``model.layers.3``), found from ``node.meta["nn_module_stack"]``.  A block may be
dropped when it is residual: its one output is ``x + f(x) (+ g(...))``, a chain of adds
(and no-op copies/casts) from its input ``x``.  Dropping it routes its users to ``x`` and erases its nodes and
tensors, which is exact when the block's residual branches output zero.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Sequence

import torch
import torch.fx as fx

from prunec.errors import ConfigError, TransformError
from prunec.pass_api import NO_DEAD_NODES, SHAPES_PROPAGATED, PassResult, register_pass
from prunec.passes.dce import eliminate_dead_code
from prunec.passes.remove_noops import noop_input
from prunec.shapes import shape_of

aten = torch.ops.aten
RESIDUAL_OPS = frozenset({aten.add.Tensor, aten.add_.Tensor})
_INDEXED = re.compile(r"^(.+)\.(\d+)$")


def _module_path(path: str) -> str:
    # Module paths may be printed "layers[0]" or "layers.0" depending on the tracer.
    return re.sub(r"\[(\d+)\]", r".\1", path.replace("L['self'].", ""))


def find_blocks(gm: fx.GraphModule) -> dict[str, dict[int, list[fx.Node]]]:
    """Nodes by module list (``"model.layers"``) and index, from ``nn_module_stack``."""
    found: dict[str, dict[int, list[fx.Node]]] = defaultdict(lambda: defaultdict(list))
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        for path, _ in node.meta.get("nn_module_stack", {}).values():
            m = _INDEXED.match(_module_path(path))
            if m:  # the outermost indexed module is the block
                found[m.group(1)][int(m.group(2))].append(node)
                break
    return {k: dict(v) for k, v in found.items()}


def choose_container(blocks: dict[str, dict[int, list[fx.Node]]], container: str | None) -> str:
    """The module list to drop from: the one named, or the only one with the most blocks."""
    if container is not None:
        if container not in blocks:
            raise ConfigError(f"no module list '{container}' in the graph; module lists: {', '.join(sorted(blocks)) or 'none'}")
        return container
    if not blocks:
        raise ConfigError("the graph has no module list (no node inside a module named like 'layers.0'); "
                          "drop-blocks needs repeated blocks")
    most = max(len(v) for v in blocks.values())
    best = sorted(k for k, v in blocks.items() if len(v) == most)
    if len(best) > 1:
        raise ConfigError(f"several module lists have {most} blocks ({', '.join(best)}); "
                          "name one with drop-blocks(container=...)")
    return best[0]


def _residual_input(name: str, nodes: list[fx.Node]) -> tuple[fx.Node, fx.Node]:
    """(input x, output) of a residual block, or a TransformError saying why it is not one."""
    inside = set(nodes)
    outputs = [n for n in nodes if any(u not in inside for u in n.users)]
    if len(outputs) != 1:
        raise TransformError(f"block {name} has {len(outputs)} outputs used outside it "
                             f"({', '.join(n.name for n in outputs)}); only single-output residual blocks can be dropped")
    out = outputs[0]
    externals = {a for n in nodes for a in n.all_input_nodes if a not in inside and a.op != "get_attr"}
    same = [a for a in externals if shape_of(a.meta.get("val")) == shape_of(out.meta.get("val"))
            and getattr(a.meta.get("val"), "dtype", None) == getattr(out.meta.get("val"), "dtype", None)]

    def reaches(node: fx.Node, x: fx.Node) -> bool:
        if node is x:
            return True
        if node not in inside:
            return False
        forwarded = noop_input(node)  # a same-dtype cast or copy of the residual stream
        if forwarded is not None:
            return reaches(forwarded, x)
        return node.target in RESIDUAL_OPS and any(reaches(a, x) for a in node.args[:2] if isinstance(a, fx.Node))

    residual = [x for x in same if reaches(out, x)]
    if len(residual) != 1:
        raise TransformError(f"block {name} is not residual: its output {out.name} is not a chain of adds "
                             "from one input of the same shape (x + f(x)); it cannot be dropped")
    return residual[0], out


def drop_block(gm: fx.GraphModule, name: str, nodes: list[fx.Node]) -> None:
    """Route the block's users to its input and erase its nodes."""
    x, out = _residual_input(name, nodes)
    out.replace_all_uses_with(x)
    for node in reversed(nodes):
        if node.users:
            raise TransformError(f"block {name}: node {node.name} is still used by "
                                 f"{', '.join(u.name for u in node.users)} after routing around the block")
        gm.graph.erase_node(node)


@register_pass("drop-blocks", requires=(SHAPES_PROPAGATED,), ensures=(SHAPES_PROPAGATED, NO_DEAD_NODES),
               exact=False)
class DropBlocks:
    """Depth pruning: remove residual blocks by index (exact when their residual branches output zero)."""

    def __init__(self, blocks: Sequence[int] | int = (), container: str | None = None) -> None:
        self.blocks = (blocks,) if isinstance(blocks, int) else tuple(int(b) for b in blocks)
        self.container = container
        if not self.blocks:
            raise ConfigError("drop-blocks needs block indices, e.g. drop-blocks(blocks=[2, 3])")

    def __call__(self, gm: fx.GraphModule) -> PassResult:
        found = find_blocks(gm)
        container = choose_container(found, self.container)
        blocks = found[container]
        missing = [b for b in self.blocks if b not in blocks]
        if missing:
            raise ConfigError(f"no block {missing[0]} in {container} (it has blocks {min(blocks)}..{max(blocks)})")
        if len(set(self.blocks)) == len(blocks):
            raise ConfigError(f"dropping every block of {container} would leave nothing; keep at least one")
        for index in sorted(set(self.blocks)):
            drop_block(gm, f"{container}.{index}", blocks[index])
        eliminate_dead_code(gm)  # the dropped blocks' tensors
        gm.graph.lint()
        gm.recompile()
        return PassResult(gm, modified=True)
