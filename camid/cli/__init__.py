"""The camid command line: `main()` maps every outcome to a documented exit code.

Only the standard library is imported at module level: the command modules (and typer) are
imported inside `main()`, under the same Ctrl-C handling as the command itself, so an
interrupt during start-up prints `Interrupted.` and exits 130 like one later on.
"""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Sequence

EXIT_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run the camid CLI and return its exit code (never raises, never shows a traceback)."""
    try:
        return _run(argv)
    except KeyboardInterrupt:
        _say("Interrupted.")
        return EXIT_INTERRUPTED


def _say(msg: str) -> None:
    """One line on stderr; text that came from evidence (file names) cannot drive the
    terminal: control characters are shown escaped."""
    try:
        from camid.report.output import printable

        msg = printable(msg)
    except Exception:  # noqa: BLE001 - an interrupt or a broken install must still say it
        msg = "".join(c if c.isprintable() else repr(c)[1:-1] for c in msg)
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(msg + "\n")
        sys.stderr.flush()


def _run(argv: Sequence[str] | None) -> int:
    import typer

    from camid.cli.app import app
    from camid.errors import EXIT_INTERNAL, EXIT_USAGE, CamidError

    command = typer.main.get_command(app)
    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        rv = command.main(args=args, prog_name="camid", standalone_mode=False)
    except typer.Abort:
        _say("Aborted.")
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        _say("Interrupted.")
        return EXIT_INTERRUPTED
    except CamidError as exc:
        _say(f"Error: {exc}")
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
        _say(
            f"Error: internal error: {type(exc).__name__}: {msg} "
            "(set CAMID_DEBUG=1 for the traceback)"
        )
        return EXIT_INTERNAL
    return rv if isinstance(rv, int) else 0
