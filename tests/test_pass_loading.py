"""Third-party passes: --pass-file, the prunec.passes entry-point group, and the example pass."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from prunec import pass_api
from prunec.errors import ConfigError
from prunec.ir import assert_ir
from prunec.pass_loading import load_builtin_passes, load_entry_point_passes, load_pass_file
from prunec.pass_manager import Step, run_passes
from prunec.instruments import VerifyEachPass
from prunec.trace import trace

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "my_pass.py"


@pytest.fixture(autouse=True)
def _isolated_registry(monkeypatch):
    """Registrations made by a test do not leak into other tests."""
    load_builtin_passes()
    monkeypatch.setattr(pass_api, "_PASSES", dict(pass_api._PASSES))


class Scaled(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * 0.5


def test_example_pass_loads_from_its_file_and_is_exact() -> None:
    assert load_pass_file(EXAMPLE) == ["fold-scale-into-linear"]
    info = pass_api.registered_passes()["fold-scale-into-linear"]
    assert info.doc.startswith("Fold `linear(x, W, b) * c`") and info.source.startswith("prunec_pass_file_my_pass")
    torch.manual_seed(0)
    model = Scaled().eval()
    x = torch.randn(2, 4)
    gm = trace(model, (x,))
    verify = VerifyEachPass((x,))
    result = run_passes(gm, [Step.of("fold-scale-into-linear")], instruments=[verify])
    assert result.modified and verify.numeric_checks == 1
    assert_ir(result.graph_module, """
        %fc_weight = param fc.weight : f32[3, 4]
        %fc_bias = param fc.bias : f32[3]
        %x = input : f32[2, 4]
        %linear = aten.linear.default(%x, %fc_weight, %fc_bias) : f32[2, 3]
        return [%linear]
    """)
    assert torch.allclose(result.graph_module(x), model(x), atol=1e-6)


def test_pass_file_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_pass_file(tmp_path / "missing.py")
    empty = tmp_path / "empty_pass.py"
    empty.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="registered no pass; decorate your pass with"):
        load_pass_file(empty)
    broken = tmp_path / "broken_pass.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="broken_pass.py failed to load: RuntimeError: boom"):
        load_pass_file(broken)
    clash = tmp_path / "clash_pass.py"
    clash.write_text(textwrap.dedent("""
        from prunec.pass_api import register_pass, PassResult
        @register_pass("dce")
        def my_dce(gm):
            '''Not the real one.'''
            return PassResult(gm, False)
    """))
    with pytest.raises(ConfigError, match="redefines the pass 'dce'"):
        load_pass_file(clash)


def _fake_distribution(root: Path) -> None:
    """An installed distribution on sys.path whose entry points declare two passes."""
    pkg = root / "prunec_demo_plugin"
    pkg.mkdir()
    (pkg / "__init__.py").write_text(textwrap.dedent('''
        from prunec.pass_api import PassResult, register_pass

        @register_pass("plugin-noop")
        def plugin_noop(gm):
            """A pass that registers itself on import."""
            return PassResult(gm, False)

        def bare(gm):
            """A plain callable: registered under its entry point's name."""
            return PassResult(gm, False)
    '''))
    dist = root / "prunec_demo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: prunec-demo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[prunec.passes]\ndemo = prunec_demo_plugin\nplugin-bare = prunec_demo_plugin:bare\n")


def test_entry_point_plugins_register_their_passes(tmp_path: Path, monkeypatch) -> None:
    _fake_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "prunec_demo_plugin", raising=False)
    added = load_entry_point_passes()
    assert set(added) == {"plugin-noop", "plugin-bare"}
    passes = pass_api.registered_passes()
    assert passes["plugin-bare"].doc == "A plain callable: registered under its entry point's name."
    assert passes["plugin-noop"].source == "prunec_demo_plugin"
    sys.modules.pop("prunec_demo_plugin", None)


def test_a_broken_plugin_is_named(tmp_path: Path, monkeypatch) -> None:
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[prunec.passes]\nbroken = no_such_module_for_prunec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"cannot load entry point 'broken = no_such_module_for_prunec'.*fix or uninstall"):
        load_entry_point_passes()


def test_loading_the_same_file_twice_keeps_its_passes() -> None:
    assert load_pass_file(EXAMPLE) == ["fold-scale-into-linear"]
    assert load_pass_file(EXAMPLE) == ["fold-scale-into-linear"]
    assert "fold-scale-into-linear" in pass_api.registered_passes()
