"""The root typer app: one command group per capability."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
import typer.completion

from camid import __version__

app = typer.Typer(
    name="camid",
    help="Camera identification, PRNU sensor fingerprints and camera-bias audits.\n\n"
    "Data goes to stdout (--format table|json|csv|ndjson), messages to stderr. "
    "Exit codes: 0 ok, 1 finding, 2 usage error, 3 unreadable inputs, 4 internal error.",
    no_args_is_help=True,
    add_completion=False,  # camid's own --show/--install-completion SHELL below
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"camid {__version__}")
        raise typer.Exit()


class Shell(str, Enum):
    """Shells with a completion script."""

    bash = "bash"
    zsh = "zsh"
    fish = "fish"
    powershell = "powershell"
    pwsh = "pwsh"


# Shell completion is typer's (the `_CAMID_COMPLETE` protocol and scripts), but the shell is
# named, not guessed from the parent process: `camid --show-completion zsh` run from bash
# gives the zsh script, and it works where no shell can be detected (CI, containers).
typer.completion.completion_init()


def _show_completion(ctx: typer.Context, param: typer.CallbackParam, value: Shell | None) -> None:
    if value is not None and not ctx.resilient_parsing:
        try:
            typer.completion.show_callback(ctx, param, value.value)  # prints the script
        except SystemExit as exc:  # typer's callbacks end with sys.exit; main() returns codes
            raise typer.Exit(exc.code or 0) from None


def _install_completion(
    ctx: typer.Context, param: typer.CallbackParam, value: Shell | None
) -> None:
    if value is not None and not ctx.resilient_parsing:
        try:
            typer.completion.install_callback(ctx, param, value.value)  # writes rc files
        except SystemExit as exc:
            raise typer.Exit(exc.code or 0) from None


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    show_completion: Annotated[
        Shell | None,
        typer.Option(
            "--show-completion",
            metavar="SHELL",
            callback=_show_completion,
            is_eager=True,
            expose_value=False,
            case_sensitive=False,
            help="Print the tab-completion script for SHELL (bash, zsh, fish, powershell, pwsh).",
        ),
    ] = None,
    install_completion: Annotated[
        Shell | None,
        typer.Option(
            "--install-completion",
            metavar="SHELL",
            callback=_install_completion,
            is_eager=True,
            expose_value=False,
            case_sensitive=False,
            help="Install tab completion for SHELL in your shell's start-up files.",
        ),
    ] = None,
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
