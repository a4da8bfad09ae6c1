"""Model files are data: a malicious pickle runs nothing, checkpoints load without executing code."""

from __future__ import annotations

import json
import os

import pytest
import torch
from typer.testing import CliRunner

import prunec
from models import DECODER
from prunec.cli import app
from prunec.models import load_model

runner = CliRunner()


class Evil:
    """Unpickling this calls os.system: what a full ``torch.load`` of an untrusted file would run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _evil_checkpoint(path, marker) -> None:
    torch.save({"model.embed_tokens.weight": torch.zeros(2, 2), "payload": Evil(str(marker))}, path)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**DECODER, architectures=["LlamaForCausalLM"])).eval()


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    _evil_checkpoint(evil, marker)
    with pytest.raises(prunec.UnsafeModelError, match="would run code") as info:
        load_model(str(evil))
    assert "posix.system" in str(info.value) or "os.system" in str(info.value), "the offending call is named"
    assert not marker.exists(), "the pickle's payload ran"


def test_malicious_pickle_on_the_command_line(tmp_path) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.bin"
    _evil_checkpoint(evil, marker)
    result = runner.invoke(app, ["prune", str(evil), "-o", str(tmp_path / "out")])
    assert result.exit_code == prunec.UnsafeModelError.exit_code == 11, result.output
    assert "--trust-remote-code" in result.output and len(result.output.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_malicious_pytorch_model_bin_in_a_hf_directory(tmp_path) -> None:
    marker = tmp_path / "pwned"
    _tiny_llama().config.save_pretrained(tmp_path)
    _evil_checkpoint(tmp_path / "pytorch_model.bin", marker)
    with pytest.raises(prunec.PruneError):
        load_model(str(tmp_path))
    assert not marker.exists(), "transformers' loader ran the pickle"


def test_the_payload_is_live_when_trusted_explicitly(tmp_path) -> None:
    """Control: the same file does run code once the user opts in, so the refusal above is real."""
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pt"
    _evil_checkpoint(evil, marker)
    with pytest.raises(prunec.ModelLoadError):  # os.system's return value is no state dict
        load_model(str(evil), trust_remote_code=True)
    assert marker.exists()


def test_custom_code_in_config_needs_trust(tmp_path) -> None:
    _tiny_llama().config.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["inspect", str(tmp_path)])
    assert result.exit_code == 11 and "--trust-remote-code" in result.output, result.output


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_single_checkpoint_file_next_to_its_config(tmp_path, suffix) -> None:
    from safetensors.torch import save_file

    model = _tiny_llama()
    model.config.save_pretrained(tmp_path)
    weights = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, weights) if suffix == ".safetensors" else torch.save(state, weights)
    loaded = load_model(str(weights))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    out = tmp_path / "pruned"
    result = runner.invoke(app, ["prune", str(weights), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["params_after"] < json.loads(result.stdout)["params_before"]


def test_hf_directory_with_model_safetensors(tmp_path) -> None:
    model = _tiny_llama()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = load_model(str(tmp_path))
    assert torch.equal(loaded.model.lm_head.weight, model.lm_head.weight)


def test_checkpoint_without_config_says_what_is_missing(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(3)}, tmp_path / "w.safetensors")
    with pytest.raises(prunec.ModelLoadError, match="config.json next to it"):
        load_model(str(tmp_path / "w.safetensors"))


def test_loaders_that_unpickle_internally_are_forced_to_weights_only(tmp_path) -> None:
    """torch.export.load (.pt2) and transformers' .bin loading call torch.load(weights_only=False)
    for some payloads; prunec runs them under torch's own switch, which overrides that."""
    from prunec.safe_load import weights_only_loads

    marker = tmp_path / "pwned"
    evil = tmp_path / "payload.pt"
    _evil_checkpoint(evil, marker)
    with weights_only_loads(), pytest.raises(Exception, match="Weights only load failed"):
        torch.load(evil, weights_only=False)
    assert not marker.exists()
    assert "TORCH_FORCE_WEIGHTS_ONLY_LOAD" not in os.environ, "the switch is restored afterwards"
