"""The model registry shared by every command: architectures and trained models."""

from camid.models.registry import ArchInfo, get_arch, get_model, list_models, register_model

__all__ = ["ArchInfo", "get_arch", "get_model", "list_models", "register_model"]
