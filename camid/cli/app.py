"""The root typer app: one command group per capability."""

from __future__ import annotations

import importlib
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


# Command modules, each registering itself on `app` or exposing a sub-app `app`.
_GROUPS: list[tuple[str, str | None, str]] = [
    ("camid.cli.demo", None, ""),
    ("camid.cli.info", None, ""),
    ("camid.cli.exif", None, ""),
    ("camid.cli.dataset", "dataset", "Dataset manifests and summaries (camera x label)."),
    ("camid.cli.models", "models", "The model registry: architectures and trained models."),
    ("camid.cli.train", None, ""),
    ("camid.cli.evaluate", None, ""),
    ("camid.cli.identify", None, ""),
    ("camid.cli.synth", "synth", "Synthetic camera benchmark datasets."),
    ("camid.cli.prnu", "prnu", "PRNU sensor fingerprints: residuals, fingerprints, matching."),
]

for module_name, group, help_text in _GROUPS:
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:  # a capability not yet present in this tree
        if exc.name != module_name:
            raise
        continue
    if group is None:
        module.register(app)
    else:
        app.add_typer(module.app, name=group, help=help_text)
