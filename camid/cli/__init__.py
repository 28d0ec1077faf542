"""The camid command line: `main()` maps every outcome to a documented exit code."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Sequence

import typer

from camid.errors import EXIT_INTERNAL, EXIT_USAGE, CamidError


def main(argv: Sequence[str] | None = None) -> int:
    """Run the camid CLI and return its exit code (never raises, never shows a traceback)."""
    from camid.cli.app import app

    command = typer.main.get_command(app)
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        rv = command.main(args=args, prog_name="camid", standalone_mode=False)
    except typer.Abort:
        typer.echo("Aborted.", err=True)
        return 130
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        return 130
    except CamidError as exc:
        typer.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    except BrokenPipeError:
        # the reader of stdout went away (e.g. `| head`): not an error of ours
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence flush at exit
        return 0
    except Exception as exc:
        if callable(getattr(exc, "show", None)) and isinstance(
            getattr(exc, "exit_code", None), int
        ):  # click's usage errors (typer may vendor click, so match by shape)
            exc.show()
            return exc.exit_code or EXIT_USAGE
        if os.environ.get("CAMID_DEBUG"):
            traceback.print_exc()
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        typer.echo(
            f"Error: internal error: {type(exc).__name__}: {msg} "
            "(set CAMID_DEBUG=1 for the traceback)",
            err=True,
        )
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0
