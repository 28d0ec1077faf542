"""The model registry shared by every command: architectures and trained models.

`camid.models.store` (the trained models on disk) needs no torch until weights are read;
the architectures (`camid.models.registry`) are torch modules, imported on first use.
"""

from __future__ import annotations

_LAZY = {"ArchInfo", "get_arch", "get_model", "list_models", "register_model"}
__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """Import the architecture registry (and torch) only when it is used."""
    if name in _LAZY:
        from camid.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'camid.models' has no attribute {name!r}")
