"""Write-back of pruned LLaMA-family and BERT models into their Hugging Face classes."""

from __future__ import annotations

import pytest
import torch

import prunec
from models import ALL_CASES, randomize_
from prunec.testing import max_abs_diff


@pytest.mark.parametrize("name,kinds", [
    ("llama_gqa", ("channels", "heads", "residual")),
    ("llama_tied", ("channels", "heads", "residual")),
    ("qwen2", ("channels", "heads", "residual")),
    ("phi3", ("channels", "heads", "residual")),
    ("gemma", ("channels", "heads")),
    ("bert", ("channels",)),
])
def test_save_pretrained_round_trip(name, kinds, tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    model, args, kwargs = ALL_CASES[name]()
    randomize_(model)
    result = prunec.prune(model, args, kwargs, ratio=0.3, kinds=kinds)
    hf = result.to_pretrained()
    with torch.no_grad():
        graph_out = result.module(*args, **kwargs)
        hf_out = hf(*args, **kwargs)
    assert max_abs_diff(graph_out, hf_out) <= 1e-5
    assert sum(p.numel() for p in hf.parameters()) == result.params_after
    hf.save_pretrained(tmp_path)
    auto = transformers.AutoModelForCausalLM if "ForCausalLM" in type(model).__name__ else transformers.AutoModel
    reloaded = auto.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        again = reloaded(*args, **kwargs)
    assert max_abs_diff(hf_out, again) <= 1e-6
    assert type(reloaded) is type(model)


def test_bert_heads_cannot_be_written_back() -> None:
    model, args, kwargs = ALL_CASES["bert"]()
    result = prunec.prune(model, args, kwargs, ratio=0.3, kinds=("heads",))
    with pytest.raises(prunec.ConfigError, match="head size"):
        result.to_pretrained()


def test_unsupported_family_is_refused() -> None:
    model, args, kwargs = ALL_CASES["resnet"]()
    result = prunec.prune(model, args, kwargs, ratio=0.3)
    with pytest.raises(prunec.ConfigError, match="not 'resnet'"):
        result.to_pretrained()


def test_compensated_biases_are_written_back(tmp_path) -> None:
    transformers = pytest.importorskip("transformers")
    model, args, kwargs = ALL_CASES["llama_gqa"]()
    randomize_(model)
    calib = [(torch.randint(0, 96, args[0].shape, generator=torch.Generator().manual_seed(i)),) for i in range(3)]
    result = prunec.prune(model, args, ratio=0.3, kinds=("channels", "heads"), importance="fluctuation",
                          calibration=calib, reconstruct=True)
    assert result.module.get_parameter("model.layers.0.mlp.down_proj.bias").shape == (48,)
    hf = result.to_pretrained()
    assert hf.config.mlp_bias and hf.config.attention_bias
    with torch.no_grad():
        assert max_abs_diff(result.module(*args), hf(*args)) <= 1e-5
    hf.save_pretrained(tmp_path)
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    with torch.no_grad():
        assert max_abs_diff(hf(*args), reloaded(*args)) <= 1e-6
