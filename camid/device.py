"""Compute-device selection shared by every command that runs a model."""

from __future__ import annotations

import torch

from camid.errors import UsageError


def auto_device() -> torch.device:
    """CUDA when present, then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Turn `auto|cpu|cuda[:N]|mps` into a usable torch.device, or raise UsageError."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return auto_device()
    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError) as exc:
        raise UsageError(f"unknown device {spec!r}: use auto, cpu, cuda[:N] or mps") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec!r} asked for, but CUDA is not available here")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UsageError(
                f"device {spec!r} asked for, but only {torch.cuda.device_count()} GPU(s) exist"
            )
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("device 'mps' asked for, but MPS is not available here")
    elif dev.type != "cpu":
        raise UsageError(f"unsupported device {spec!r}: use auto, cpu, cuda[:N] or mps")
    return dev


def device_description(dev: torch.device) -> str:
    """Human-readable name of a device (GPU model where known)."""
    if dev.type == "cuda":
        idx = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{idx} ({torch.cuda.get_device_name(idx)})"
    return str(dev)
