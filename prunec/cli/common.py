"""Shared pieces of the command line: the Typer app, consoles, error handling, progress."""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from prunec.errors import PruneError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Structured pruning as a compiler pipeline: trace, analyse, remove, lower, verify.")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        import torch

        out.print(f"prunec {version('prunec')} (torch {torch.__version__})")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print prunec's version and exit.")) -> None:
    """Structured pruning as a compiler pipeline: trace, analyse, remove, lower, verify."""


def clean_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a PruneError into one line on stderr and the error's exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except PruneError as exc:
            err.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def progress_bar() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                    console=err, transient=True, disable=not err.is_terminal)
