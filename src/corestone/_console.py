"""The ``corestone`` console script, installed with the core even without the ``cli`` extra.

The command line needs typer (the ``cli`` extra). Without it, the script says so in one
line and exits 2, as for any bad setting, instead of printing an import traceback.
"""

from __future__ import annotations

import sys

from corestone.errors import MissingExtraError

__all__ = ["main"]

EXIT_USAGE = 2


def main() -> None:
    """Run :func:`corestone.cli.main`, or explain which extra it needs."""
    try:
        from corestone.cli import main as run_cli  # the import is what needs the extra
    except MissingExtraError as missing:
        sys.stderr.write(f"corestone: {missing}\n")
        raise SystemExit(EXIT_USAGE) from None
    run_cli()
