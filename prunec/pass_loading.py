"""Where passes come from: the built-in ``prunec.passes`` package, installed plugins, pass files.

* Built-in passes register when their module in ``passes/`` is imported.
* Installed packages expose passes through the entry-point group ``prunec.passes``: each
  entry point names a module (whose import registers passes with ``@register_pass``) or a
  pass callable (registered under the entry point's name if it did not register itself).
* ``--pass-file my_pass.py`` executes a Python file the user named explicitly.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
import zlib
from pathlib import Path
from typing import Sequence

from prunec.errors import ConfigError
from prunec.pass_api import PassInfo, register_pass, registered_passes

ENTRY_POINT_GROUP = "prunec.passes"


def load_builtin_passes() -> None:
    """Import every module of ``prunec.passes`` so its passes register."""
    import prunec.passes as package

    for mod in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{mod.name}")


def _check_no_redefinition(before: dict[str, PassInfo], origin: str, reloaded_source: str = "") -> list[str]:
    after = registered_passes()
    for name, info in after.items():
        if name in before and before[name].factory is not info.factory and before[name].source != reloaded_source:
            raise ConfigError(f"{origin} redefines the pass '{name}' (from {before[name].source}); "
                              "give your pass another name")
    return [n for n in after if n not in before]


def load_entry_point_passes() -> list[str]:
    """Load the passes of installed plugins (entry-point group ``prunec.passes``); return new names."""
    added: list[str] = []
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        before = registered_passes()
        origin = f"entry point '{ep.name} = {ep.value}'"
        try:
            obj = ep.load()
        except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, named
            raise ConfigError(f"cannot load {origin} of group {ENTRY_POINT_GROUP}: {type(exc).__name__}: {exc}; "
                              "fix or uninstall the plugin") from exc
        new = _check_no_redefinition(before, origin)
        is_registered = any(info.factory is obj for info in registered_passes().values())
        if not new and not is_registered and callable(obj) and not isinstance(obj, type(sys)):
            register_pass(ep.name)(obj)
            new = [ep.name]
        added += new
    return added


def load_pass_file(path: str | Path) -> list[str]:
    """Execute the Python file ``path`` (the user named it) and return the passes it registered."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"pass file {path} does not exist or is not a .py file; pass the path of a Python file")
    # A stable module name per file: loading the same file again replaces its own passes.
    module_name = f"prunec_pass_file_{path.stem}_{zlib.crc32(str(path.resolve()).encode()):08x}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    before = registered_passes()
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file failed; say where
        del sys.modules[module_name]
        raise ConfigError(f"pass file {path} failed to load: {type(exc).__name__}: {exc}") from exc
    _check_no_redefinition(before, f"pass file {path}", reloaded_source=module_name)
    new = [n for n, info in registered_passes().items() if info.source == module_name]
    if not new:
        raise ConfigError(f"pass file {path} registered no pass; decorate your pass with "
                          "@prunec.pass_api.register_pass(\"name\")")
    return new


def available_passes(pass_files: Sequence[str | Path] = ()) -> dict[str, PassInfo]:
    """Built-in, plugin and pass-file passes, by name."""
    load_builtin_passes()
    load_entry_point_passes()
    for f in pass_files:
        load_pass_file(f)
    return registered_passes()
