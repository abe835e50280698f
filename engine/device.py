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
GLIBC_DYNAMIC_MMAP_MAX = 32 << 20                  # glibc's own threshold never rises above this
_allocator_tuned = False


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for `--device` (auto: CUDA when available)."""
    if name not in DEVICES:
        raise InputError(f"unknown device {name!r}; expected one of {', '.join(DEVICES)}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("device cuda requested but CUDA is not available "
                         f"(torch {torch.__version__}, built for CUDA: {torch.version.cuda}); "
                         "use --device cpu or auto")
    return torch.device(name)


def tune_host_allocator(block_bytes: int) -> bool:
    """On CPU, keep freed blocks of `block_bytes` in the heap instead of returning them (glibc only).

    Training and evaluation allocate and free a batch x catalogue score matrix every step. glibc
    serves blocks over its mmap threshold (which it raises by itself up to 32 MB) with mmap and
    unmaps them on free, so with a large catalogue every step page-faults hundreds of MB back in:
    on the 2-core machine 1.6x slower training and 2x slower evaluation on the full demo (82K
    items). Raising the mmap and trim thresholds to 1 GB keeps such blocks for reuse, at about 1.5x
    the peak resident memory. Below 32 MB glibc does well alone (and tuning measured 15% slower on
    the small demo), so nothing changes there. Returns whether the process is tuned.
    """
    global _allocator_tuned
    if _allocator_tuned or block_bytes <= GLIBC_DYNAMIC_MMAP_MAX or not sys.platform.startswith("linux"):
        return _allocator_tuned
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _allocator_tuned = bool(libc.mallopt(_M_MMAP_THRESHOLD, HOST_MMAP_THRESHOLD)
                                and libc.mallopt(_M_TRIM_THRESHOLD, HOST_MMAP_THRESHOLD))
    except (OSError, AttributeError):           # musl or another libc without mallopt
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
