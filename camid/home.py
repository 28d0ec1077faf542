"""The camid home folder: models, fingerprints and caches live here."""

from __future__ import annotations

import os
from pathlib import Path


def camid_home(create: bool = True) -> Path:
    """Return `$CAMID_HOME`, else `$XDG_DATA_HOME/camid`, else `~/.local/share/camid`."""
    env = os.environ.get("CAMID_HOME")
    if env:
        home = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_DATA_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".local" / "share"
        home = base / "camid"
    if create:
        home.mkdir(parents=True, exist_ok=True)
    return home


def torch_hub_checkpoints() -> Path:
    """Folder where torchvision looks for cached weights (`$TORCH_HOME/hub/checkpoints`)."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        base = Path(torch_home).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "torch"
    return base / "hub" / "checkpoints"
