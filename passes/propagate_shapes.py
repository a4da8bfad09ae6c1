"""Shape propagation: recompute every node's ``meta["val"]`` with fake tensors."""

from __future__ import annotations

import torch.fx as fx

from prunec.pass_api import SHAPES_PROPAGATED, PassResult, register_pass
from prunec.shapes import repropagate


@register_pass("propagate-shapes", ensures=(SHAPES_PROPAGATED,))
def propagate_shapes(gm: fx.GraphModule) -> PassResult:
    """Recompute shapes and dtypes of every node (FakeTensorProp); the program itself is unchanged."""
    # The program is the same, but the printed IR changes when metadata was stale: report that.
    return PassResult(gm, modified=bool(repropagate(gm)))
