"""`prunec opt`: run a pipeline of passes on a model and write the resulting program (.pt2)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import torch
import typer

from prunec.cli.common import app, clean_errors, err, out, progress_bar
from prunec.errors import ConfigError, OutputExistsError
from prunec.instruments import InstrumentOptions, Timing, instruments_from_options
from prunec.models import load_model
from prunec.output import atomic_output_file
from prunec.pass_loading import available_passes
from prunec.pass_manager import run_passes
from prunec.pass_spec import parse_pipeline
from prunec.trace import trace


def save_program(gm: torch.fx.GraphModule, args: tuple, kwargs: dict, path: Path, *, overwrite: bool) -> None:
    """Export ``gm`` and save it as ``path`` (.pt2), atomically."""
    ep = torch.export.export(gm, args, kwargs, strict=False)
    with atomic_output_file(path, overwrite=overwrite) as tmp:
        torch.export.save(ep, str(tmp))


@app.command("opt")
@clean_errors
def opt_cmd(
    model: str = typer.Argument(..., help="HF directory, .gguf, .pt2, package.module:factory, or a short name."),
    passes: str = typer.Option(..., "--passes", help="Pipeline: NAME[,NAME(key=value)...]; NAME* repeats to a fixed point."),
    output: Path = typer.Option(..., "-o", "--output", help="The optimised program (.pt2)."),
    pass_file: list[Path] = typer.Option([], "--pass-file", help="Load passes from this Python file (repeatable; it is executed)."),
    dump_ir: Optional[Path] = typer.Option(None, "--dump-ir", help="Write the IR before and after every pass to this (new or empty) directory."),
    print_ir_before_all: bool = typer.Option(False, "--print-ir-before-all", help="Print the IR before every pass (stderr)."),
    print_ir_after_all: bool = typer.Option(False, "--print-ir-after-all", help="Print the IR after every pass (stderr)."),
    verify_each: bool = typer.Option(False, "--verify-each", help="After every pass: re-propagate shapes; compare outputs with the previous step's (exact passes)."),
    time_passes: bool = typer.Option(False, "--time-passes", help="Print the time of every pass."),
    fixed_point: bool = typer.Option(False, "--fixed-point", help="Repeat the whole pipeline until no pass changes the graph."),
    atol: float = typer.Option(1e-5, help="--verify-each: absolute tolerance."),
    rtol: float = typer.Option(1e-4, help="--verify-each: relative tolerance."),
    seq_len: int = typer.Option(16, help="Sequence length of the example input for text models."),
    force: bool = typer.Option(False, help="Replace OUTPUT if it exists."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run a pipeline of passes on MODEL (like LLVM's opt) and write the resulting program."""
    if output.suffix != ".pt2":
        raise ConfigError(f"output {output} must end in .pt2 (an exported program)")
    if output.exists() and not force:
        raise OutputExistsError(f"output {output} already exists; choose another -o or pass --force to replace it")
    available_passes(pass_file)
    steps = parse_pipeline(passes)
    options = InstrumentOptions(dump_ir=dump_ir, print_ir_before_all=print_ir_before_all,
                                print_ir_after_all=print_ir_after_all, verify_each=verify_each,
                                time_passes=time_passes, atol=atol, rtol=rtol)
    with progress_bar() as progress:
        task = progress.add_task(f"loading {model}", total=None)
        loaded = load_model(model, seq_len=seq_len)
        if verify_each and any(p.device.type == "meta" for p in loaded.model.parameters()):
            raise ConfigError(f"{model} has no weights (meta device); --verify-each needs real weights")
        progress.update(task, description="tracing")
        gm = trace(loaded.model, loaded.args, loaded.kwargs)
        nodes_before = len(gm.graph.nodes)
        params_before = sum(p.numel() for p in gm.parameters())
        instruments = instruments_from_options(options, loaded.args, loaded.kwargs, stream=sys.stderr)
        progress.update(task, description=f"running {len(steps)} passes")
        result = run_passes(gm, steps, instruments=instruments, fixed_point=fixed_point)
        progress.update(task, description=f"writing {output}")
        save_program(result.graph_module, loaded.args, loaded.kwargs, output, overwrite=force)
    final = result.graph_module
    summary = {"model": model, "output": str(output), "pipeline": [s.label for s in steps],
               "steps": [{"index": r.index, "pass": r.name, "modified": r.modified} for r in result.history],
               "nodes_before": nodes_before, "nodes_after": len(final.graph.nodes),
               "params_before": params_before, "params_after": sum(p.numel() for p in final.parameters())}
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    for r in result.history:
        out.print(f"  {r.index:3d}  {r.name:<24} {'changed' if r.modified else 'no change'}")
    out.print(f"nodes {nodes_before} -> {summary['nodes_after']}, params {params_before:,} -> "
              f"{summary['params_after']:,}; wrote {output}" + (f"; IR dumps in {dump_ir}" if dump_ir else ""))
    for inst in instruments:
        if isinstance(inst, Timing):
            err.print(inst.report(), end="", highlight=False)
