"""`camid info`: versions, compute device, threads and the camid home folder."""

from __future__ import annotations

import platform
import sys

import typer

from camid.cli.common import FormatOpt, JsonOpt, QuietOpt, output_from
from camid.report.output import Format


def collect_info() -> dict:
    """Facts about this installation that help a user (or a bug report)."""
    import numpy
    import PIL
    import scipy
    import torch
    import torchvision

    from camid import __version__
    from camid.device import auto_device, device_description
    from camid.home import camid_home, torch_hub_checkpoints
    from camid.models.registry import get_arch, imagenet_path, list_models

    dev = auto_device()
    gpus = (
        [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if torch.cuda.is_available()
        else []
    )
    imagenet = [
        n
        for n in list_models()
        if get_arch(n).imagenet_file and imagenet_path(get_arch(n)).is_file()
    ]
    return {
        "camid_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "pillow": PIL.__version__,
        "device_auto": device_description(dev),
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "torch_threads": torch.get_num_threads(),
        "camid_home": str(camid_home()),
        "torch_hub_checkpoints": str(torch_hub_checkpoints()),
        "imagenet_weights_present": imagenet,
    }


def register(app: typer.Typer) -> None:
    """Add `info` to the root app."""

    @app.command()
    def info(fmt: FormatOpt = Format.auto, json_: JsonOpt = False, quiet: QuietOpt = 0) -> None:
        """Print versions, the device --device auto would pick, threads and the camid home."""
        output_from(fmt, json_, quiet).emit_object(collect_info(), title="camid info")
