"""Depth pruning: block influence, exact removal of a block that adds nothing, HF write-back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import prunec
from models import DECODER, randomize_
from prunec.cli import app
from prunec.depth import block_influence, drop_blocks, least_influential
from prunec.testing import max_abs_diff


def llama_with_dead_block():
    """A 4-block LLaMA whose block 2 adds nothing (its residual branches' output projections are zero)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**dict(DECODER, num_hidden_layers=4))).eval()
    randomize_(model)
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    ids = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    return model, (ids,)


def _calib() -> list[tuple]:
    return [(torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(i)),) for i in range(3)]


def test_a_block_that_adds_nothing_ranks_first_and_is_removed_exactly() -> None:
    model, args = llama_with_dead_block()
    influence = block_influence(model, _calib())
    assert influence.shape == (4,) and influence[2] < 1e-6 and (np.delete(influence, 2) > 1e-3).all()
    assert least_influential(influence, 1) == [2]
    shallower = drop_blocks(model, [2])
    assert shallower.config.num_hidden_layers == 3 and len(shallower.model.layers) == 3
    assert [b.self_attn.layer_idx for b in shallower.model.layers] == [0, 1, 2]
    assert len(model.model.layers) == 4  # the input model is untouched
    with torch.no_grad():
        assert max_abs_diff(model(*args).logits, shallower(*args).logits) <= 1e-5
        # Generation with a KV cache still works on the renumbered blocks.
        out = shallower.generate(args[0][:1], max_new_tokens=3, do_sample=False)
    assert out.shape == (1, 11)


def test_dropping_a_live_block_changes_the_output() -> None:
    model, args = llama_with_dead_block()
    with torch.no_grad():
        assert max_abs_diff(model(*args).logits, drop_blocks(model, [1])(*args).logits) > 1e-3


@pytest.mark.parametrize("indices,message", [([7], "out of range"), ([0, 1, 2, 3], "keep at least one")])
def test_bad_block_indices(indices, message) -> None:
    model, _ = llama_with_dead_block()
    with pytest.raises(prunec.ConfigError, match=message):
        drop_blocks(model, indices)


def test_cli_drop_blocks_with_budget_writes_a_shallower_hf_model(tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    out = tmp_path / "p"
    result = CliRunner().invoke(app, ["prune", "test_depth:llama_with_dead_block", "--calib", str(tmp_path / "ids.npz"),
                                      "--drop-blocks", "1", "--budget", "params=0.6", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["depth"]["dropped_blocks"] == [2]
    kept = summary["non_embedding_params_after"] / summary["non_embedding_params_before"]
    assert 0.6 <= kept < 0.66
    reloaded = AutoModelForCausalLM.from_pretrained(out / "hf").eval()
    assert reloaded.config.num_hidden_layers == 3
    program = torch.export.load(str(out / "model.pt2")).module()
    ids = torch.from_numpy(np.load(tmp_path / "ids.npz")["arr_0"][:1])
    with torch.no_grad():
        assert max_abs_diff(program(ids), reloaded(ids).logits) <= 1e-4


def test_cli_drop_blocks_refusals(tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["prune", "test_depth:llama_with_dead_block", "--drop-blocks", "1", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "--drop-blocks ranks blocks on calibration data" in r.output
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    r = runner.invoke(app, ["prune", "test_depth:llama_with_dead_block", "--calib", str(tmp_path / "ids.npz"),
                            "--drop-blocks", "4", "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "choose 0 to 3" in r.output and not (tmp_path / "x").exists()
    np.savez(tmp_path / "img.npz", np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32))
    r = runner.invoke(app, ["prune", "models:resnet", "--calib", str(tmp_path / "img.npz"), "--drop-blocks", "1",
                            "-o", str(tmp_path / "x")])
    assert r.exit_code == 2 and "blocks in model.layers" in r.output, r.output
