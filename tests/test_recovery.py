"""Recovery (distillation) schedule, batching, data and device handling."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import prunec
from prunec.cli import app
from prunec.devices import move_module, resolve_device
from prunec.errors import ConfigError
from prunec.recovery import RecoveryConfig, _window_order, distill, own_parameters
from prunec.trace import trace
from tests.models import ALL_CASES
from tests.test_calibration_methods import randomize_

pytestmark = pytest.mark.slow  # distillation/streaming/fuzzing: tens of seconds on 2 cores

runner = CliRunner()


def test_learning_rate_warms_up_then_follows_a_cosine_to_zero() -> None:
    config = RecoveryConfig(steps=100, lr=1e-3, warmup=0.1)
    rates = [config.learning_rate(s) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert all(a <= b for a, b in zip(rates[:10], rates[1:10]))
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))
    assert rates[55] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert rates[-1] < 1e-5


def test_windows_are_visited_in_shuffled_epochs() -> None:
    order = _window_order(5, 12, seed=0)
    assert sorted(order[:5]) == list(range(5)) and sorted(order[5:10]) == list(range(5))
    assert order != list(range(5)) * 2 + [0, 1]
    assert order == _window_order(5, 12, seed=0)


def _llama():
    model, args, _ = ALL_CASES["llama_gqa"]()
    randomize_(model)
    return model.eval(), args


def test_accumulating_windows_lowers_the_distillation_loss() -> None:
    model, args = _llama()
    student = prunec.prune(model, args, ratio=0.5, kinds=("channels",)).module
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 96, args[0].shape, generator=g),) for _ in range(6)]
    losses = distill(student, model, batches, RecoveryConfig(steps=25, lr=3e-3, batch_size=3, device="cpu"))
    assert len(losses) == 25
    assert losses[-1] < 0.5 * losses[0]


def test_stacked_windows_give_the_same_steps_as_one_window_per_pass() -> None:
    # micro_batch only changes how a step's windows are fed: the losses and the trained weights
    # must match one window per pass (an eager HF model takes any batch size).
    from transformers import LlamaConfig, LlamaForCausalLM

    from prunec.hf import to_pretrained
    from tests.models import DECODER

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**DECODER)).eval()
    randomize_(model)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 96, (1, 12), generator=g),) for _ in range(8)]
    result = prunec.prune(model, batches[0], ratio=0.5, kinds=("channels",))
    student = to_pretrained(model, result.module)
    runs = {}
    for micro in (1, 4):
        trained = copy.deepcopy(student)
        config = RecoveryConfig(steps=6, lr=3e-3, batch_size=4, micro_batch=micro, device="cpu")
        runs[micro] = (distill(trained, model, batches, config), trained.state_dict())
    (one, state_one), (four, state_four) = runs[1], runs[4]
    assert one[-1] < one[0]
    assert four == pytest.approx(one, rel=1e-4)
    for name, tensor in state_one.items():
        torch.testing.assert_close(state_four[name], tensor, rtol=1e-4, atol=1e-5)


def test_a_traced_graph_refuses_stacked_windows() -> None:
    model, args = _llama()
    student = prunec.prune(model, args, ratio=0.5, kinds=("channels",)).module
    with pytest.raises(ConfigError, match="batch size fixed"):
        distill(student, model, [args], RecoveryConfig(steps=1, micro_batch=2, device="cpu"))
    with pytest.raises(ConfigError, match="micro-batch"):
        distill(student, model, [args], RecoveryConfig(steps=1, micro_batch=0, device="cpu"))
    eager = copy.deepcopy(model)
    with pytest.raises(ConfigError, match="tensor keyword inputs"):
        distill(eager, model, [args], RecoveryConfig(steps=1, micro_batch=2, device="cpu"),
                kwargs={"attention_mask": torch.ones_like(args[0])})


def test_windows_of_different_lengths_are_not_stacked() -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.models import DECODER

    model = LlamaForCausalLM(LlamaConfig(**DECODER)).eval()
    student = copy.deepcopy(model)
    batches = [(torch.zeros(1, 8, dtype=torch.long),), (torch.zeros(1, 6, dtype=torch.long),)]
    with pytest.raises(ConfigError, match="one length"):
        distill(student, model, batches, RecoveryConfig(steps=1, batch_size=2, micro_batch=2, device="cpu"))


@pytest.mark.parametrize("case", ["bert", "llama_tied"])
def test_recovery_leaves_the_original_model_untouched(case) -> None:
    # The pruned graph holds the original's untouched tensors as the same Parameters; distillation
    # must train copies, or the teacher moves with the student and the caller's model changes.
    model, args, _ = ALL_CASES[case]()
    randomize_(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 96, args[0].shape, generator=g),) for _ in range(4)]
    result = prunec.prune(model, args, ratio=0.5, kinds=("channels",), calibration=batches, importance="activation",
                          recover=RecoveryConfig(steps=5, lr=1e-2, batch_size=2, device="cpu"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    original = {p.untyped_storage().data_ptr() for p in model.parameters()}
    assert not any(p.untyped_storage().data_ptr() in original for p in result.module.parameters())
    # Training did change the pruned model's copies of the formerly shared tensors.
    pruned = dict(result.module.named_parameters())
    assert any(name in pruned and pruned[name].shape == v.shape and not torch.equal(pruned[name], v)
               for name, v in before.items())


def test_own_parameters_keeps_ties_inside_the_student() -> None:
    model, args, _ = ALL_CASES["llama_tied"]()
    student = prunec.prune(model, args, ratio=0.5, kinds=("channels",)).module
    ptrs = {}
    for name, p in student.named_parameters(remove_duplicate=False):
        ptrs.setdefault(p.untyped_storage().data_ptr(), []).append(name)
    groups_before = sorted(sorted(v) for v in ptrs.values() if len(v) > 1)
    assert ["lm_head.weight", "model.embed_tokens.weight"] in groups_before  # the tied embedding
    assert own_parameters(student, model) > 0
    ptrs = {}
    for name, p in student.named_parameters(remove_duplicate=False):
        ptrs.setdefault(p.untyped_storage().data_ptr(), []).append(name)
    assert sorted(sorted(v) for v in ptrs.values() if len(v) > 1) == groups_before


def test_a_traced_graph_moves_with_its_device_arguments() -> None:
    model, (ids,) = _llama()
    gm = trace(model, (ids,))
    expected = _logits(gm(ids))
    with_device = [n for n in gm.graph.nodes if isinstance(n.kwargs.get("device"), torch.device)]
    assert with_device, "the traced llama creates tensors with an explicit device"
    move_module(gm, torch.device("meta"))
    assert all(n.kwargs["device"] == torch.device("meta") for n in with_device)
    assert all(p.device.type == "meta" for p in gm.parameters())
    # Runs end to end on the new device (rotary's ``aten.to.device(x, cpu, ...)`` included).
    assert _logits(gm(ids.to("meta"))).device.type == "meta"
    gm2 = trace(model, (ids,))
    move_module(gm2, torch.device("cpu"))  # a no-op move keeps the function
    torch.testing.assert_close(_logits(gm2(ids)), expected)


def _logits(out):
    return out.logits if hasattr(out, "logits") else out[0]


def test_device_names_are_checked() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ConfigError, match="unknown device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")


def test_cli_recovers_on_other_text_with_batches(tmp_path) -> None:
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    more = tmp_path / "more.npz"
    np.savez(more, np.random.default_rng(1).integers(0, 96, size=(10, 8)))
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"), "--ratio", "0.3",
                                 "--recover", "--recover-steps", "2", "--recover-batch", "3",
                                 "--recover-data", str(more), "--recover-samples", "9", "--device", "cpu",
                                 "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["recovery"]["windows"] == 9 and summary["recovery"]["batch"] == 3
    assert summary["recovery"]["data"] == str(more)
    assert len(summary["recovery_losses"]) == 2


@pytest.mark.parametrize("extra, message", [
    (["--recover-data", "x.txt"], "add --recover"),
    (["--recover", "--recover-samples", "0"], "--recover-samples must be >= 1"),
    (["--recover", "--recover-batch", "0"], "must be >= 1"),
    (["--recover", "--device", "tpu"], "device 'tpu'"),
    (["--recover-precision", "bf16"], "--recover-precision apply to recovery: add --recover"),
    (["--recover", "--recover-precision", "fp16"], "unknown precision 'fp16'"),
    (["--recover-micro-batch", "2"], "--recover-micro-batch applies to recovery: add --recover"),
    (["--recover", "--recover-micro-batch", "9"], "between 1 and --recover-batch (8)"),
])
def test_bad_recovery_options_are_refused(tmp_path, extra, message) -> None:
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"), *extra, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not out.exists()


def test_calibration_windows_default_to_512_tokens_capped_by_the_model() -> None:
    from types import SimpleNamespace

    from prunec.pipeline import PruneJob, calibration_seq_len

    assert calibration_seq_len(PruneJob()) == 512
    assert calibration_seq_len(PruneJob(), config=SimpleNamespace(max_position_embeddings=128)) == 128
    assert calibration_seq_len(PruneJob(), config=SimpleNamespace(max_position_embeddings=8192)) == 512
    assert calibration_seq_len(PruneJob(calib_seq_len=64), config=SimpleNamespace(max_position_embeddings=32)) == 64
    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(max_position_embeddings=256)
    assert calibration_seq_len(PruneJob(), model) == 256


def test_schedule_recovers_every_step_before_evaluating_and_a_rollback_keeps_the_last_model() -> None:
    from prunec.schedule import ScheduleConfig, gradual_prune

    model, args = _llama()
    g = torch.Generator().manual_seed(2)
    calib = [(torch.randint(0, 96, args[0].shape, generator=g),) for _ in range(4)]
    seen = []

    def recover(module: torch.nn.Module) -> None:
        # Stands in for a fine-tune: changes every weight in place, the shared ones included.
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(0.5)
        seen.append(module)

    metrics = iter([1.0, 1.0, 100.0])  # base, step 1 (kept), step 2 (rolled back)
    evaluated = []

    def evaluate(module: torch.nn.Module) -> float:
        evaluated.append(module)
        return next(metrics)

    snapshot = {}

    def on_step(record) -> None:
        if record.step == 1:
            snapshot.update({n: p.detach().clone() for n, p in seen[0].named_parameters()})

    out = gradual_prune(model, args, budget="params=0.6", evaluate=evaluate, on_step=on_step, recover=recover,
                        schedule=ScheduleConfig(steps=2, max_step_regression=1.5), kinds=("channels",),
                        calibration=calib)
    assert len(seen) == 2 and evaluated[1:] == seen  # each step recovered, then evaluated
    assert out.stopped_early and out.module is seen[0]
    # Step 2 halved its own copies, not the tensors it shared with step 1's model.
    assert all(torch.equal(snapshot[n], p) for n, p in out.module.named_parameters())


def test_cli_recovers_after_every_step(tmp_path) -> None:
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(10, 8)))
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"),
                                 "--budget", "params=0.8", "--steps", "2", "--max-step-regression", "100",
                                 "--recover", "--recover-every-step", "--recover-steps", "2", "--device", "cpu",
                                 "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["recovery"]["every_step"] is True
    assert [s["step"] for s in summary["schedule"]] == [1, 2]
    assert len(summary["recovery_losses"]) == 2 * 2  # 2 distillation steps after each of 2 pruning steps


@pytest.mark.parametrize("extra", [["--recover-every-step", "--budget", "params=0.8", "--steps", "2"],
                                   ["--recover", "--recover-every-step"]])
def test_recover_every_step_needs_recover_and_steps(tmp_path, extra) -> None:
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", "models:llama_gqa", "--calib", str(tmp_path / "ids.npz"), *extra, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "--recover-every-step distils between the steps of a schedule" in result.output
    assert not out.exists()


def _hf_llama_dir(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.models import DECODER

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**DECODER)).eval()
    randomize_(model)
    model.save_pretrained(tmp_path / "base")
    return model


def test_eager_recovery_writes_the_trained_weights_back_into_the_graph(tmp_path) -> None:
    from prunec.eager_recovery import distill_eager
    from prunec.hf import to_pretrained

    model = _hf_llama_dir(tmp_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randint(0, 96, (1, 12), generator=g),) for _ in range(4)]
    # Bias compensation gives down_proj a bias, so the rebuilt model carries zero filler biases.
    graph = prunec.prune(model, batches[0], ratio=0.5, kinds=("channels",), calibration=batches,
                         importance="activation", bias_compensation=True).module
    untrained = {k: v.clone() for k, v in graph.state_dict().items()}
    losses = distill_eager(graph, model, batches, RecoveryConfig(steps=4, lr=3e-3, batch_size=4, micro_batch=4,
                                                                 device="cpu"))
    assert losses[-1] < losses[0]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the teacher is untouched
    assert any(not torch.equal(untrained[k], v) for k, v in graph.state_dict().items())
    # The graph computes what the trained eager model computes: rebuilt again, they agree.
    ids = batches[0][0]
    torch.testing.assert_close(graph(ids)[0] if isinstance(graph(ids), tuple) else graph(ids).logits,
                               to_pretrained(model, graph)(ids).logits, rtol=1e-5, atol=1e-5)


def test_cli_stacked_recovery_matches_one_window_per_pass(tmp_path) -> None:
    _hf_llama_dir(tmp_path)
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    outputs = {}
    for micro in ("1", "4"):
        out = tmp_path / f"out{micro}"
        result = runner.invoke(app, ["prune", str(tmp_path / "base"), "--calib", str(tmp_path / "ids.npz"),
                                     "--ratio", "0.5", "--recover", "--recover-steps", "3", "--recover-batch", "4",
                                     "--recover-lr", "3e-3", "--recover-micro-batch", micro, "--device", "cpu",
                                     "-o", str(out), "--json"])
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["recovery"]["micro_batch"] == int(micro)
        outputs[micro] = summary["recovery_losses"], out
    assert outputs["4"][0] == pytest.approx(outputs["1"][0], rel=1e-3)
    from transformers import AutoModelForCausalLM

    ids = torch.randint(0, 96, (1, 8))
    one, four = (AutoModelForCausalLM.from_pretrained(outputs[m][1] / "hf").eval() for m in ("1", "4"))
    with torch.no_grad():
        torch.testing.assert_close(four(ids).logits, one(ids).logits, rtol=1e-3, atol=1e-4)


def test_stacked_recovery_of_a_model_without_write_back_is_refused(tmp_path) -> None:
    # GPT-2 has no write-back to its class, so there is no eager model to stack windows into.
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    out = tmp_path / "out"
    result = runner.invoke(app, ["prune", "models:gpt2", "--calib", str(tmp_path / "ids.npz"), "--ratio", "0.3",
                                 "--recover", "--recover-steps", "1", "--recover-micro-batch", "2", "--device", "cpu",
                                 "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert "needs the model rebuilt as its Hugging Face class" in result.output
    assert not out.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the automatic micro-batch applies on a CUDA GPU")
def test_recovery_on_a_gpu_stacks_the_step_windows_by_default(tmp_path) -> None:
    _hf_llama_dir(tmp_path)
    np.savez(tmp_path / "ids.npz", np.random.default_rng(0).integers(0, 96, size=(4, 8)))
    runs = {}
    for extra in ([], ["--recover-micro-batch", "1"]):
        out = tmp_path / f"out{len(extra)}"
        result = runner.invoke(app, ["prune", str(tmp_path / "base"), "--calib", str(tmp_path / "ids.npz"),
                                     "--ratio", "0.5", "--recover", "--recover-steps", "3", "--recover-batch", "4",
                                     "--recover-lr", "3e-3", "--device", "cuda", *extra, "-o", str(out), "--json"])
        assert result.exit_code == 0, result.output
        runs[len(extra)] = json.loads(result.stdout)
    assert runs[0]["recovery"]["micro_batch"] == 4 and runs[2]["recovery"]["micro_batch"] == 1
    assert runs[0]["recovery_losses"] == pytest.approx(runs[2]["recovery_losses"], rel=1e-2)
