"""Analysis without weights: models on the meta device, and config-only directories."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

import prunec
from models import DECODER
from prunec.cli import app


def _shape_signature(analysis: prunec.Analysis) -> list[tuple]:
    return [(g.kind, g.size, g.blocks, tuple(str(m) for m in g.members), g.frozen) for g in analysis.groups]


def test_meta_analysis_matches_real_analysis() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**DECODER)
    real = LlamaForCausalLM(config).eval()
    with torch.device("meta"):
        meta = LlamaForCausalLM(config).eval()
    ids = torch.zeros(1, 8, dtype=torch.long)
    a_real = prunec.analyze(real, (ids,))
    a_meta = prunec.analyze(meta, (ids.to("meta"),))
    assert _shape_signature(a_meta) == _shape_signature(a_real)


def test_seven_b_shaped_layers_analyse_on_meta() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    # LLaMA-2-7B widths (two layers keep the test short; the benchmark runs all 32).
    config = LlamaConfig(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=2,
                         num_attention_heads=32, num_key_value_heads=32)
    with torch.device("meta"):
        model = LlamaForCausalLM(config).eval()
    analysis = prunec.analyze(model, (torch.zeros(1, 16, dtype=torch.long, device="meta"),))
    sizes = {(g.kind, g.size) for g in analysis.prunable_groups}
    assert {("heads", 32), ("channels", 11008), ("residual", 4096)} <= sizes


def test_inspect_a_config_only_directory(tmp_path) -> None:
    from transformers import LlamaConfig

    LlamaConfig(**DECODER, architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    result = CliRunner().invoke(app, ["inspect", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["weights"] is False
    assert any(g["kind"] == "heads" and g["size"] == 6 for g in data["groups"])


def test_prune_refuses_a_config_only_directory(tmp_path) -> None:
    from transformers import LlamaConfig

    LlamaConfig(**DECODER, architectures=["LlamaForCausalLM"]).save_pretrained(tmp_path / "cfg")
    result = CliRunner().invoke(app, ["prune", str(tmp_path / "cfg"), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no weights" in result.output
    assert not (tmp_path / "out").exists()
