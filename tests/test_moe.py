"""Mixture of experts (Hugging Face Mixtral): expert FFN channels are prunable, exactly; the router is frozen."""

from __future__ import annotations

import torch

import prunec
from prunec.testing import check_dead_unit_exactness

MIXTRAL = dict(vocab_size=96, hidden_size=48, intermediate_size=64, num_hidden_layers=2, num_attention_heads=6,
               num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, max_position_embeddings=64)


def _mixtral() -> torch.nn.Module:
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    return MixtralForCausalLM(MixtralConfig(**MIXTRAL)).eval()


def test_expert_channels_are_one_prunable_group_per_layer_and_removal_is_exact() -> None:
    ids = torch.randint(0, 96, (2, 8), generator=torch.Generator().manual_seed(0))
    report = check_dead_unit_exactness(_mixtral(), (ids,), ratio=0.25, kinds=("channels",))
    analysis = report.result.analysis
    experts = [g for g in analysis.prunable_groups if g.kind == "channels" and "experts" in g.label]
    assert len(experts) == MIXTRAL["num_hidden_layers"]
    for g in experts:
        # One unit = the same channel in every expert: gate/up rows and down columns.
        assert g.size == MIXTRAL["intermediate_size"]
        assert {m.name.rsplit(".", 1)[-1] for m in g.members} == {"gate_up_proj", "down_proj"}
    assert report.max_abs_diff < 1e-5
    state = report.result.module.state_dict()
    assert tuple(state["model.layers.0.mlp.experts.gate_up_proj"].shape) == (4, 2 * 48, 48)
    assert tuple(state["model.layers.0.mlp.experts.down_proj"].shape) == (4, 48, 48)


def test_router_expert_axis_is_frozen_with_a_reason() -> None:
    analysis = prunec.analyze(_mixtral(), (torch.zeros(1, 8, dtype=torch.long),))
    router = [g for g in analysis.groups if g.label == "model.layers.0.mlp.gate.weight[0]"]
    assert router and router[0].frozen and any("softmax" in reason for reason in router[0].frozen)


def test_gpt_oss_interleaved_experts_are_prunable_in_gate_up_pairs() -> None:
    """gpt-oss: one 3-D gate_up_proj per layer, gate = columns 0, 2, .., up = columns 1, 3, ..."""
    from zoo.hf_cases import gpt_oss

    model, args, _ = gpt_oss()
    analysis = prunec.analyze(model, args)
    experts = [g for g in analysis.prunable_groups if g.label.endswith("experts.gate_up_proj[2]")]
    assert len(experts) == 2 and all(g.kind == "channels" and g.size == 64 for g in experts)
    g = experts[0]
    member = next(m for m in g.members if m.name.endswith("gate_up_proj"))
    assert analysis.unit_coords(g, member)[:6].tolist() == [0, 0, 1, 1, 2, 2]
    report = check_dead_unit_exactness(model, args, ratio=0.25, kinds=("channels",))
    assert report.max_abs_diff < 1e-5
    state = report.result.module.state_dict()
    assert tuple(state["model.layers.0.mlp.experts.gate_up_proj"].shape) == (4, 48, 2 * 48)
    assert tuple(state["model.layers.0.mlp.experts.down_proj"].shape) == (4, 48, 48)
