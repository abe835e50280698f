"""Pick the compute device (`--device auto|cpu|cuda`) and describe what is available."""

from __future__ import annotations

import torch

from engine.core.errors import InputError
from engine.core.schema import Device, values


def resolve_device(name: str = "auto") -> torch.device:
    if name not in values(Device):
        raise InputError(f"unknown device {name!r}; expected one of {', '.join(values(Device))}")
    if name == Device.AUTO:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but CUDA is not available "
                         f"(torch {torch.__version__}, built for CUDA: {torch.version.cuda}); "
                         "use --device cpu or auto")
    return torch.device(str(name))


def device_info(device: torch.device | None = None) -> dict:
    """Name and memory of the device (for run_started events and the app's train form)."""
    cuda = torch.cuda.is_available()
    info = {"cuda_available": cuda, "torch": torch.__version__, "cuda_version": torch.version.cuda}
    if device is not None:
        info["device"] = str(device)
    if cuda:
        idx = device.index if device is not None and device.type == "cuda" and device.index is not None else 0
        props = torch.cuda.get_device_properties(idx)
        info.update({"gpu_name": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1),
                     "gpu_count": torch.cuda.device_count()})
    return info


def gpu_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
