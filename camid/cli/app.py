"""The root typer app: one command group per capability."""

from __future__ import annotations

from typing import Annotated

import typer

from camid import __version__

app = typer.Typer(
    name="camid",
    help="Camera identification, PRNU sensor fingerprints and camera-bias audits.\n\n"
    "Data goes to stdout (--format table|json|csv|ndjson), messages to stderr. "
    "Exit codes: 0 ok, 1 finding, 2 usage error, 3 unreadable inputs, 4 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"camid {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """camid: which camera took this photo, and does your dataset leak it."""


from camid.cli import (  # noqa: E402 - the root app must exist before commands attach
    bias_check,
    dataset,
    demo,
    evaluate,
    exif,
    heatmap,
    identify,
    info,
    lr_check,
    models,
    prnu,
    probe,
    reproduce,
    synth,
    train,
)

# One registration style: every command module has `register(app)`, which adds its
# top-level command(s) or its command group.
for _module in (
    demo, info, exif, identify, train, evaluate, bias_check, heatmap, lr_check, probe,
    reproduce, dataset, models, synth, prnu,
):  # fmt: skip
    _module.register(app)
