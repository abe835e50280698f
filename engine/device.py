"""Pick the compute device (`--device auto|cpu|cuda`) and describe what is available."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

from engine.config import DEVICES
from engine.errors import InputError

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3      # glibc mallopt parameters
HOST_MMAP_THRESHOLD = 1 << 30
_allocator_tuned: bool | None = None


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for `--device`; on CPU also tunes the host allocator (see below)."""
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but CUDA is not available "
                         f"(torch {torch.__version__}, built for CUDA: {torch.version.cuda}); "
                         "use --device cpu or auto")
    if name == "cpu":
        tune_host_allocator()
    return torch.device(name)


def tune_host_allocator() -> bool:
    """Keep large freed blocks in the process instead of returning them to the OS (glibc only).

    Training and evaluation on the CPU allocate and free full-catalogue score matrices of hundreds
    of MB every step. glibc serves blocks over its mmap threshold (at most 32 MB by default) with
    mmap and unmaps them on free, so every step page-faults them back in: on the 2-core machine
    1.6x slower training and 2x slower evaluation on the full demo. Raising the mmap and trim
    thresholds to 1 GB keeps them in the heap for reuse, at about 1.5x the peak resident memory
    (which the process then keeps). Returns whether it applied.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _allocator_tuned = all([libc.mallopt(_M_MMAP_THRESHOLD, HOST_MMAP_THRESHOLD),
                                        libc.mallopt(_M_TRIM_THRESHOLD, HOST_MMAP_THRESHOLD)])
            except (OSError, AttributeError):     # musl or another libc without mallopt
                pass
    return _allocator_tuned


def device_info(device: torch.device | None = None) -> dict:
    """Name and memory of the device (for run_started events and the app's train form)."""
    cuda = torch.cuda.is_available()
    info = {"cuda_available": cuda, "torch": torch.__version__, "cuda_version": torch.version.cuda}
    if device is not None:
        info["device"] = str(device)
    if cuda:
        idx = device.index if device is not None and device.type == "cuda" and device.index is not None else 0
        props = torch.cuda.get_device_properties(idx)
        info.update({"gpu_name": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1)})
    return info


def gpu_memory_mb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
