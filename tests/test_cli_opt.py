"""The pass commands: `prunec passes`, `prunec opt` (with instruments and --pass-file), `prunec diff`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from typer.testing import CliRunner

from prunec.cli import app

runner = CliRunner()
EXAMPLE = str(Path(__file__).resolve().parents[1] / "examples" / "my_pass.py")


class ScaledMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(8, 16)
        self.down = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(self.up(x).relu() * 0.25) * 2.0


def scaled_mlp():
    """Factory for the CLI (`test_cli_opt:scaled_mlp`)."""
    torch.manual_seed(0)
    return ScaledMLP().eval(), (torch.randn(2, 8),)


def test_passes_lists_builtins_with_docs_and_contracts() -> None:
    result = runner.invoke(app, ["passes", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert {"dce", "fold-batchnorm", "remove-noops", "drop-blocks", "merge-linear", "annotate-costs",
            "structured-removal"} <= set(rows)
    assert rows["dce"]["ensures"] == ["no dead nodes"] and rows["dce"]["doc"].startswith("Dead-code elimination")
    assert rows["fold-batchnorm"]["invalidates"] == ["no dead nodes"]


def test_passes_includes_a_pass_file() -> None:
    result = runner.invoke(app, ["passes", "--pass-file", EXAMPLE])
    assert result.exit_code == 0, result.output
    assert "fold-scale-into-linear" in result.stdout


@pytest.mark.slow
def test_opt_folds_batchnorm_with_dumps_and_verification(tmp_path: Path) -> None:
    out, dumps = tmp_path / "opt.pt2", tmp_path / "ir"
    result = runner.invoke(app, ["opt", "models:resnet", "--passes", "fold-batchnorm,remove-noops*,dce",
                                 "--verify-each", "--dump-ir", str(dumps), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert [s["pass"] for s in summary["steps"]][:2] == ["fold-batchnorm", "remove-noops"]
    assert summary["nodes_after"] < summary["nodes_before"]
    files = sorted(p.name for p in dumps.iterdir())
    assert files[0] == "000_input.txt" and files[1] == "001_fold-batchnorm.txt" and files[-1].endswith("_dce.txt")
    assert "batch_norm" in (dumps / files[0]).read_text() and "batch_norm" not in (dumps / files[-1]).read_text()
    # A fresh interpreter (transformers not imported yet) can still read the HF-output program.
    import subprocess
    import sys

    code = "import sys; from prunec.graph_diff import read_ir; print(read_ir(sys.argv[1]).count(chr(10)))"
    fresh = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0 and int(fresh.stdout) > 10, fresh.stderr[-1500:]
    import models

    model, args = models.resnet()[:2]
    optimised = torch.export.load(str(out)).module()
    with torch.no_grad():
        assert torch.allclose(optimised(*args).logits, model(*args).logits, atol=1e-4)


def test_opt_runs_the_example_pass_from_its_file(tmp_path: Path) -> None:
    out = tmp_path / "opt.pt2"
    result = runner.invoke(app, ["opt", "test_cli_opt:scaled_mlp", "--pass-file", EXAMPLE,
                                 "--passes", "fold-scale-into-linear,dce", "--verify-each", "--print-ir-after-all",
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "IR after fold-scale-into-linear (step 1, modified)" in result.stderr
    program = torch.export.load(str(out)).module()
    # Only the scale right after a linear folds; the one after the relu stays.
    assert str(program.graph).count("aten.mul") == 1
    model, (x,) = scaled_mlp()
    with torch.no_grad():
        assert torch.allclose(program(x), model(x), atol=1e-6)


@pytest.mark.parametrize("argv, code, message", [
    (["--passes", "no-such-pass"], 2, "unknown pass 'no-such-pass'"),
    (["--passes", "structured-removal"], 2, "pass 'structured-removal' needs the option(s) analysis, plan"),
    (["--passes", "needs-stats", "--pass-file", "{tmp}/needs.py"], 2, "requires 'calibration statistics'"),
    (["--passes", "dce", "--pass-file", "{tmp}/none.py"], 2, "does not exist"),
    (["--passes", "drop-blocks(blocks=[0])"], 2, "no module list"),
])
def test_opt_errors_are_one_line_with_exit_codes(tmp_path: Path, argv, code, message) -> None:
    out = tmp_path / "x.pt2"
    (tmp_path / "needs.py").write_text(
        "from prunec.pass_api import register_pass, PassResult\n"
        "@register_pass('needs-stats', requires=('calibration statistics',))\n"
        "def needs(gm):\n    return PassResult(gm, False)\n")
    result = runner.invoke(app, ["opt", "test_cli_opt:scaled_mlp", *[a.replace("{tmp}", str(tmp_path)) for a in argv],
                                 "-o", str(out)])
    assert result.exit_code == code, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()


def test_opt_refuses_to_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "x.pt2"
    out.write_text("keep me")
    result = runner.invoke(app, ["opt", "test_cli_opt:scaled_mlp", "--passes", "dce", "-o", str(out)])
    assert result.exit_code == 6 and out.read_text() == "keep me"


def test_diff_of_two_dumps_and_html(tmp_path: Path) -> None:
    dumps = tmp_path / "ir"
    assert runner.invoke(app, ["opt", "test_cli_opt:scaled_mlp", "--pass-file", EXAMPLE, "--passes",
                               "fold-scale-into-linear,dce", "--dump-ir", str(dumps), "-o", str(tmp_path / "o.pt2")]
                         ).exit_code == 0
    a, b = dumps / "000_input.txt", dumps / "002_dce.txt"
    result = runner.invoke(app, ["diff", str(a), str(b), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["nodes"] == {"added": 0, "removed": 1, "changed": 1}  # the mul, and the return
    assert summary["flops_before"] == summary["flops_after"] == 2 * 2 * (8 * 16 + 16 * 4)
    text = runner.invoke(app, ["diff", str(a), str(b), "--html", str(tmp_path / "r.html")])
    assert text.exit_code == 0, text.output
    assert "-%mul_1 = aten.mul.Tensor(%linear_1, 2) : f32[2, 4]" in text.stdout
    assert "nodes added 0, removed 1, changed 1" in text.stdout
    assert (tmp_path / "r.html").read_text().startswith("<!doctype html>")
    again = runner.invoke(app, ["diff", str(a), str(b), "--html", str(tmp_path / "r.html")])
    assert again.exit_code == 6


def test_diff_of_a_model_and_a_prune_output_directory(tmp_path: Path) -> None:
    out = tmp_path / "pruned"
    assert runner.invoke(app, ["prune", "models:residual_mlp", "--ratio", "0.5", "-o", str(out)]).exit_code == 0
    result = runner.invoke(app, ["diff", "models:residual_mlp", str(out), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["params_after"] < summary["params_before"]
    assert summary["flops_after"] < summary["flops_before"]
    assert any(l["shape_before"] != l["shape_after"] for l in summary["layers"])


def test_diff_rejects_what_is_not_a_graph(tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello world\n")
    result = runner.invoke(app, ["diff", str(junk), str(junk)])
    assert result.exit_code == 2 and "line 1 is not prunec IR" in result.stderr


def test_written_files_have_normal_permissions(tmp_path: Path) -> None:
    import os
    import stat

    out = tmp_path / "o.pt2"
    assert runner.invoke(app, ["opt", "test_cli_opt:scaled_mlp", "--passes", "dce", "-o", str(out)]).exit_code == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in tmp_path.iterdir()] == ["o.pt2"]  # no temporary file left behind
