"""Atomic output directories: write everything to a temporary sibling, then rename into place."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from prunec.errors import ConfigError, OutputExistsError


def check_output(path: Path, *, overwrite: bool = False, option: str = "-o") -> None:
    """Refuse, before any work, an output that exists (without ``overwrite``) or cannot be created.

    Called up front by the commands, so a typo in ``-o`` costs nothing instead of a model load.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} already exists; choose another {option} or pass --force to replace it")
    parent = next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError(f"output {path}: {parent} is not a directory; choose another {option}")
    import os

    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"output {path}: {parent} is not writable; choose another {option}")


@contextlib.contextmanager
def atomic_output_dir(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``path`` only if the block succeeds.

    Nothing is left behind on failure; an existing ``path`` is replaced only with
    ``overwrite`` (and only once the new content is complete).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"output {path} already exists; choose another -o or pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        old = path.with_name(f".{path.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(path)


@contextlib.contextmanager
def atomic_output_file(path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path (same suffix) that becomes ``path`` only if the block succeeds.

    The file gets the usual permissions (``0o666`` less the umask), not ``mkstemp``'s ``0o600``.
    """
    import os

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} already exists; choose another path or pass --force to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
