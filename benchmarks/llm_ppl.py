"""WikiText-2 perplexity of SmolLM2-135M pruned by several prunec recipes, side by side.

Protocol (../shared/README.md): tokenise wiki.test.raw once with the model's tokenizer, cut it into
non-overlapping windows of 512 tokens, take the first 24, report exp(mean next-token NLL).
Calibration: the first N windows of 512 tokens of wiki.valid.tokens (never the test split).
Budgets are fractions of the *non-embedding* parameters kept (exact counts, tied embedding excluded).
All rows run in one process on the same loaded model; threads = 2.

    python benchmarks/llm_ppl.py --data ../shared/data/wikitext2 [--budgets 0.9,0.8,0.7] [--methods ...]

Recovery grid: ``--recover-grid "steps=500,lr=1e-4,batch_size=8;steps=1000,lr=5e-5,batch_size=8"`` prunes once
per budget with the first method, then distils a copy of the pruned model from the base for each
setting (``prunec.recovery.RecoveryConfig`` fields) on ``--recover-samples`` windows of
``wiki.valid.tokens`` (the calibration split; the test split is only evaluated), and prints a row each.
``--device auto`` trains on a CUDA GPU when one is present.

``--recover-model hf`` distils the pruned model rebuilt as the stock Hugging Face class
(``prunec.hf.to_pretrained``; needs uniform widths) instead of the traced graph: an eager model takes
a batch of windows per pass (``micro_batch=8`` in the grid), which is what keeps a GPU busy.
``--save-pruned DIR`` writes that rebuilt model with ``save_pretrained`` after pruning, and
``--load-pruned DIR`` starts the recovery grid from such a folder instead of pruning again (the
first method and budget name the row).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import prunec
from prunec.calibration import CalibrationConfig, load_calibration
from prunec.evaluate import perplexity, tokenize_file
from prunec.models import load_model
from prunec.recovery import RecoveryConfig
from prunec.schedule import ScheduleConfig, gradual_prune
from prunec.sensitivity import SensitivityConfig

KINDS = ("channels", "heads")
METHODS = {
    # name: (prune options, gradual steps)
    "l2-uniform": (dict(importance="l2", allocation="uniform"), 1),
    "activation-uniform": (dict(importance="activation", allocation="uniform"), 1),
    "fluctuation-bias-global": (dict(importance="fluctuation", allocation="global", bias_compensation=True), 1),
    "fluctuation-recon-uniform": (dict(importance="fluctuation", allocation="uniform", reconstruct=True), 1),
    "fluctuation-recon-4steps": (dict(importance="fluctuation", allocation="uniform", reconstruct=True), 4),
    "fluctuation-recon-ffn-only": (dict(importance="fluctuation", allocation="uniform", reconstruct=True,
                                        kinds=("channels",)), 1),
    "obs-recon-uniform": (dict(importance="obs", allocation="uniform", reconstruct=True), 1),
    "fluctuation-recon-ffn-only-recover": (dict(importance="fluctuation", allocation="uniform", reconstruct=True,
                                                kinds=("channels",), recover=RecoveryConfig(steps=64, lr=2e-5)), 1),
    # Measured per-layer sensitivity (KL to the base on 1 calibration window, 3 levels per layer).
    "fluctuation-recon-ffn-sensitivity": (dict(importance="fluctuation", allocation="sensitivity", reconstruct=True,
                                               kinds=("channels",),
                                               sensitivity=SensitivityConfig(levels=(0.15, 0.3, 0.45), batches=1)), 1),
    # Depth + width: drop the least influential block, then FFN widths for the rest of the budget.
    "depth1-fluctuation-recon-ffn": (dict(importance="fluctuation", allocation="uniform", reconstruct=True,
                                          kinds=("channels",), drop_blocks=1), 1),
    "fluctuation-recon-ffn-lora-recover": (dict(importance="fluctuation", allocation="uniform", reconstruct=True,
                                                kinds=("channels",),
                                                recover=RecoveryConfig(steps=128, lr=5e-4, lora_rank=8)), 1),
    "fluctuation-recon-ffn-recover256": (dict(importance="fluctuation", allocation="uniform", reconstruct=True,
                                              kinds=("channels",), recover=RecoveryConfig(steps=256, lr=2e-5)), 1),
}


def torch_pruning_recipe(model: torch.nn.Module, example: torch.Tensor, keep: float) -> torch.nn.Module:
    """Torch-Pruning's documented LLM recipe (examples/LLMs/prune_llm.py in its repository):
    group L2 norm importance (mean reduction), uniform ratio on hidden size, heads and FFN, lm_head
    ignored, round_to=4.  Install it only in the benchmark's environment: pip install torch-pruning.
    The ratio is chosen as 1 - sqrt(keep), since most weights shrink in both dimensions."""
    import copy

    import torch_pruning as tp

    model = copy.deepcopy(model)
    model.config.use_cache = False  # TP traces autograd from the output; a KV cache object is not a tensor
    ratio = 1.0 - keep**0.5
    cfg = model.config
    num_heads = {}
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            num_heads[m.q_proj] = cfg.num_attention_heads
            num_heads[m.k_proj] = cfg.num_key_value_heads
            num_heads[m.v_proj] = cfg.num_key_value_heads
    # The recipe's GroupNormImportance is called GroupMagnitudeImportance in torch-pruning 1.6.
    importance_cls = getattr(tp.importance, "GroupNormImportance", None) or tp.importance.GroupMagnitudeImportance
    pruner = tp.pruner.MetaPruner(
        model, example_inputs=example, importance=importance_cls(p=2, group_reduction="mean"),
        global_pruning=False, pruning_ratio=ratio, output_transform=lambda out: out.logits, ignored_layers=[model.lm_head], num_heads=num_heads,
        prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=ratio, round_to=4)
    for group in pruner.step(interactive=True):
        group.prune()
    gqa = cfg.num_attention_heads != cfg.num_key_value_heads
    cfg.hidden_size = model.lm_head.in_features
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            heads = m.q_proj.out_features // m.head_dim
            cfg.num_attention_heads = heads
            kv = m.k_proj.out_features // m.head_dim if gqa else heads
            m.num_key_value_groups = heads // kv
            cfg.num_key_value_heads = kv
        elif name.endswith("mlp"):
            cfg.intermediate_size = m.gate_proj.out_features
    return model.eval()


def torch_pruning_ffn(model: torch.nn.Module, example: torch.Tensor, keep: float) -> torch.nn.Module:
    """Torch-Pruning on FFN neurons only (what a new user does when the full recipe crashes):
    group L2 magnitude, uniform ratio; every layer but gate/up projections ignored.  The FFN ratio
    is chosen to remove the same number of non-embedding parameters as the budget."""
    import copy

    import torch_pruning as tp

    model = copy.deepcopy(model)
    model.config.use_cache = False
    cfg = model.config
    ffn_params = 3 * cfg.hidden_size * cfg.intermediate_size * cfg.num_hidden_layers
    ratio = min(0.99, (1.0 - keep) * non_embedding(model) / ffn_params)
    keep_layers = {m for n, m in model.named_modules() if n.endswith(("gate_proj", "up_proj"))}
    ignored = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding)) and m not in keep_layers]
    importance_cls = getattr(tp.importance, "GroupNormImportance", None) or tp.importance.GroupMagnitudeImportance
    pruner = tp.pruner.MetaPruner(model, example_inputs=example, importance=importance_cls(p=2, group_reduction="mean"),
                                  global_pruning=False, pruning_ratio=ratio, ignored_layers=ignored,
                                  output_transform=lambda out: out.logits)
    pruner.step()
    cfg.intermediate_size = model.model.layers[0].mlp.gate_proj.out_features
    return model.eval()


def non_embedding(model: torch.nn.Module) -> int:
    embed = model.get_input_embeddings().weight
    return sum(p.numel() for p in model.parameters() if p is not embed)


def depth_first(model: torch.nn.Module, calib: list[tuple], n: int, keep: float) -> tuple[torch.nn.Module, float, list[int]]:
    """Drop the ``n`` least influential blocks; the width budget is what is left of ``keep``."""
    from prunec.depth import block_influence, drop_blocks, least_influential

    dropped = least_influential(block_influence(model, calib), n)
    shallower = drop_blocks(model, dropped)
    return shallower, keep * non_embedding(model) / non_embedding(shallower), dropped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder with wiki.test.raw and wiki.valid.tokens")
    parser.add_argument("--budgets", default="0.9,0.8,0.7")
    slow = ("obs-recon-uniform", "fluctuation-recon-ffn-only-recover", "fluctuation-recon-ffn-sensitivity",
            "depth1-fluctuation-recon-ffn", "fluctuation-recon-ffn-lora-recover", "fluctuation-recon-ffn-recover256")
    parser.add_argument("--methods", default=",".join(m for m in METHODS if m not in slow),
                        help=f"comma-separated, from: {', '.join(METHODS)}, torch-pruning, torch-pruning-ffn")
    parser.add_argument("--calib-samples", type=int, default=32)
    parser.add_argument("--base-ppl", type=float, default=None,
                        help="base perplexity measured by an earlier run of this script (skips re-evaluating the base)")
    parser.add_argument("--recover-grid", default="",
                        help="';'-separated recovery settings, each 'field=value,...' of RecoveryConfig")
    parser.add_argument("--recover-samples", type=int, default=512,
                        help="windows of wiki.valid.tokens to distil on (all of it is 534 windows of 512)")
    parser.add_argument("--device", default="auto", help="where recovery trains (auto: a CUDA GPU when present)")
    parser.add_argument("--recover-model", choices=("graph", "hf"), default="graph",
                        help="distil the traced graph (one window per pass) or the rebuilt Hugging Face model")
    parser.add_argument("--save-pruned", type=Path, default=None, help="save_pretrained the pruned model here")
    parser.add_argument("--load-pruned", type=Path, default=None,
                        help="skip pruning: run the recovery grid on this save_pretrained folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--windows", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    loaded = load_model("smollm2-135m", seq_len=args.window)
    ids = tokenize_file(args.data / "wiki.test.raw", loaded.tokenizer)
    calib = load_calibration(args.data / "wiki.valid.tokens", loaded.tokenizer,
                             CalibrationConfig(n_samples=args.calib_samples + 4, seq_len=args.window))
    calib, holdout = calib[: args.calib_samples], calib[args.calib_samples :]
    example = (torch.zeros(1, args.window, dtype=torch.long),)
    t = time.perf_counter()
    if args.base_ppl:
        base = args.base_ppl
        print(f"SmolLM2-135M base perplexity {base:.2f} (given with --base-ppl, from an earlier run)", flush=True)
    else:
        base = perplexity(loaded.model, ids, args.window, args.windows)
        print(f"SmolLM2-135M base perplexity {base:.2f} ({time.perf_counter() - t:.0f} s to evaluate)", flush=True)
    print("| keep (non-emb params) | method | kept fraction | params | PPL | PPL / base | prune s |")
    print("|---|---|---|---|---|---|---|")
    if args.load_pruned:
        from transformers import AutoModelForCausalLM

        keep, name = float(args.budgets.split(",")[0]), args.methods.split(",")[0]
        student = AutoModelForCausalLM.from_pretrained(args.load_pruned, dtype=torch.float32).eval()
        kept = non_embedding(student) / non_embedding(loaded.model)
        params = sum(p.numel() for p in student.parameters())
        ppl = perplexity(student, ids, args.window, args.windows)
        print(f"| {keep} | {name} (loaded from {args.load_pruned}) | {kept:.3f} | {params:,} | {ppl:.2f} | "
              f"{ppl / base:.2f} | - |", flush=True)
        recover_grid(args, loaded, student, params, ids, base, keep, name, kept)
        return
    for keep in [float(b) for b in args.budgets.split(",")]:
        for name in args.methods.split(","):
            t = time.perf_counter()
            if name in ("torch-pruning", "torch-pruning-ffn"):
                recipe = torch_pruning_recipe if name == "torch-pruning" else torch_pruning_ffn
                try:
                    pruned = recipe(loaded.model, example, keep)
                except Exception as exc:  # noqa: BLE001 - a peer's crash is a result worth reporting
                    print(f"| {keep} | {name} | - | - | crashed: {type(exc).__name__}: {str(exc)[:80]} | - | - |")
                    continue
                seconds = time.perf_counter() - t
                ppl = perplexity(pruned, ids, args.window, args.windows)
                kept = non_embedding(pruned) / non_embedding(loaded.model)
                params = sum(p.numel() for p in pruned.parameters())
                print(f"| {keep} | {name} (torch-pruning 1.6) | {kept:.3f} | {params:,} | {ppl:.2f} | {ppl / base:.2f} | "
                      f"{seconds:.0f} |", flush=True)
                continue
            options, steps = METHODS[name]
            options = dict(options)
            kinds = options.pop("kinds", KINDS)
            model, budget_keep, note = loaded.model, keep, ""
            drop = options.pop("drop_blocks", 0)
            if drop:
                model, budget_keep, dropped = depth_first(loaded.model, calib, drop, keep)
                note = f" (dropped blocks {dropped})"
            if steps > 1:
                held_ids = torch.cat([b[0].reshape(-1) for b in holdout])
                scheduled = gradual_prune(
                    model, example, budget=f"params={budget_keep}",
                    evaluate=lambda m: perplexity(m, held_ids, args.window, len(holdout)),
                    schedule=ScheduleConfig(steps=steps, max_step_regression=1.5),
                    kinds=kinds, calibration=calib, **options)
                result = scheduled.result
                note += " (stopped early)" if scheduled.stopped_early else ""
            else:
                result = prunec.prune(model, example, budget=f"params={budget_keep}", kinds=kinds,
                                      calibration=calib if name != "l2-uniform" else None, **options)
            seconds = time.perf_counter() - t
            ppl = perplexity(result.module, ids, args.window, args.windows)
            kept = result.non_embedding_after / non_embedding(loaded.model)
            print(f"| {keep} | {name}{note} | {kept:.3f} | {result.params_after:,} | {ppl:.2f} | {ppl / base:.2f} | "
                  f"{seconds:.0f} |", flush=True)
            student = result.module
            if args.recover_model == "hf" or args.save_pruned:
                from prunec.hf import to_pretrained

                student = to_pretrained(loaded.model, result.module)
            if args.save_pruned:
                student.save_pretrained(args.save_pruned)
                print(f"saved the pruned model to {args.save_pruned}", flush=True)
            if args.recover_grid:
                if args.recover_model == "graph":
                    student = result.module
                recover_grid(args, loaded, student, result.params_after, ids, base, keep, name, kept)
                break  # the grid starts from the first method's pruned model


def recover_grid(args: argparse.Namespace, loaded, pruned: torch.nn.Module, params: int, ids: torch.Tensor,
                 base: float, keep: float, name: str, kept: float) -> None:
    """One row per recovery setting, each distilling its own copy of the pruned model."""
    import copy

    from prunec.devices import resolve_device
    from prunec.recovery import distill

    windows = load_calibration(args.data / "wiki.valid.tokens", loaded.tokenizer,
                               CalibrationConfig(n_samples=args.recover_samples, seq_len=args.window))
    for spec in args.recover_grid.split(";"):
        fields = {k: type(getattr(RecoveryConfig, k))(v) for k, v in (kv.split("=") for kv in spec.split(","))}
        config = RecoveryConfig(device=args.device, **fields)
        student = copy.deepcopy(pruned)
        t = time.perf_counter()
        losses = distill(student, loaded.model, windows, config)
        seconds = time.perf_counter() - t
        ppl = perplexity(student, ids, args.window, args.windows)
        print(f"| {keep} | {name} + recovery {spec} on {len(windows)} windows ({args.recover_model}, "
              f"{resolve_device(config.device)}; loss "
              f"{losses[0]:.3f} -> {sum(losses[-10:]) / len(losses[-10:]):.3f}) | {kept:.3f} | {params:,} | "
              f"{ppl:.2f} | {ppl / base:.2f} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
