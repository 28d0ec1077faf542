"""`camid models`: architectures and trained models in the registry."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from camid.cli.common import FormatOpt, JsonOpt, QuietOpt, output_from, replace_hint
from camid.errors import NotFoundError
from camid.report.output import Format

app = typer.Typer(no_args_is_help=True)

ARCH_COLUMNS = ["name", "family", "input_size", "min_input_size", "imagenet_available",
                "description"]  # fmt: skip
MODEL_COLUMNS = ["name", "arch", "classes", "accuracy", "task", "created", "status", "path"]
"""What the tables show (JSON and CSV carry every field)."""


@app.command("list")
def list_cmd(
    archs: Annotated[bool, typer.Option("--archs", help="List architectures instead.")] = False,
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """Trained models in the registry (or, with --archs, the architectures)."""
    from camid.models import store

    out = output_from(fmt, json_, quiet)
    if archs:
        from camid.models.registry import get_arch, list_models

        out.emit(
            [get_arch(n).to_record() for n in list_models()],
            columns=None if out.machine else ARCH_COLUMNS,
            title="architectures",
        )
        return
    rows = store.list_stored()
    if not rows:
        out.info(
            f"no trained models in {store.models_dir()} yet; `camid train` adds one "
            "(`camid models list --archs` shows architectures)"
        )
    out.emit(rows, columns=None if out.machine else MODEL_COLUMNS, title="trained models")


@app.command()
def archs(fmt: FormatOpt = Format.auto, json_: JsonOpt = False, quiet: QuietOpt = 0) -> None:
    """Registered architectures, their input sizes and ImageNet weights availability."""
    list_cmd(archs=True, fmt=fmt, json_=json_, quiet=quiet)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="Trained model name, file, or architecture.")],
    fmt: FormatOpt = Format.auto,
    json_: JsonOpt = False,
    quiet: QuietOpt = 0,
) -> None:
    """The card of a trained model (verified), or the facts of an architecture."""
    from camid.models import store
    from camid.models.registry import get_arch, list_models

    out = output_from(fmt, json_, quiet)
    try:
        card, path = store.read_card(name)
    except NotFoundError:
        if name in list_models():
            out.emit_object(get_arch(name).to_record(), title=name)
            return
        raise
    rec = {"path": str(path), **card.to_dict()}
    out.emit_object(rec, title=card.name)


@app.command("import")
def import_cmd(
    file: Annotated[Path, typer.Argument(help="A camid .safetensors model file.")],
    name: Annotated[str | None, typer.Option(help="Store under this name.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a model of the same name.")] = False,
    quiet: QuietOpt = 0,
) -> None:
    """Verify a model file (format, card, weights hash) and add it to the registry."""
    from camid.models import store

    out = output_from(Format.table, False, quiet)
    with replace_hint("--overwrite"):
        new_name, dest = store.import_model(file, name=name, overwrite=overwrite)
    out.info(f"imported {file} as {new_name!r} ({dest})")


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="Trained model name.")],
    dest: Annotated[Path, typer.Argument(help="Destination file or folder.")],
    quiet: QuietOpt = 0,
) -> None:
    """Copy a verified model to a standalone .safetensors file (to share or archive)."""
    from camid.models import store

    out = output_from(Format.table, False, quiet)
    path = store.export_model(name, dest)
    out.info(f"exported {name!r} to {path}")


@app.command()
def remove(
    name: Annotated[str, typer.Argument(help="Trained model name.")],
    quiet: QuietOpt = 0,
) -> None:
    """Delete a trained model from the registry."""
    from camid.models import store

    out = output_from(Format.table, False, quiet)
    path = store.remove_model(name)
    out.info(f"removed {name!r} ({path})")


def register(root: typer.Typer) -> None:
    """Add the `models` command group to the root app."""
    root.add_typer(app, name="models", help="The model registry: architectures and trained models.")
