"""The command line (Typer + Rich): one module per command, all on one app.

Each ``*_cmd`` module registers its command on :data:`prunec.cli.common.app` when imported.
"""

from __future__ import annotations

import sys

from prunec.cli.common import app
from prunec.cli import (  # noqa: F401  (importing a module registers its command)
    bench_cmd, check_cmd, compile_cmd, diff_cmd, generate_cmd, inspect_cmd, opt_cmd, passes_cmd, prune_cmd, run_cmd,
    targets_cmd,
)

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    sys.exit(main())
