"""Live utilisation and memory of GPUs, read through NVIDIA's NVML (the `nvidia-ml-py` package,
module `pynvml`), for the app's Train screen. Reading is cheap (no torch, no CUDA context) and never
raises: without the package, a driver or a GPU, `read_gpus` returns None.

GPU ids are the physical ones a job's CUDA_VISIBLE_DEVICES names (indices or GPU-... UUIDs).
"""

from __future__ import annotations

from dataclasses import dataclass

_nvml = None            # the initialised module, or False once initialisation failed


@dataclass(frozen=True)
class GpuReading:
    id: str                 # as given (an index or a UUID)
    name: str
    util_pct: int           # share of the last sample period a kernel ran
    mem_used_mb: float
    mem_total_mb: float


def _init():
    global _nvml
    if _nvml is None:
        try:
            import pynvml
            pynvml.nvmlInit()
            _nvml = pynvml
        except Exception:       # no package, no driver, no GPU: nothing to show
            _nvml = False
    return _nvml or None


def read_gpus(ids: list[str]) -> list[GpuReading] | None:
    nv = _init()
    if nv is None:
        return None
    out = []
    try:
        for gid in ids:
            gid = str(gid).strip()
            h = (nv.nvmlDeviceGetHandleByUUID(gid) if gid.startswith(("GPU-", "MIG-"))
                 else nv.nvmlDeviceGetHandleByIndex(int(gid)))
            name = nv.nvmlDeviceGetName(h)
            mem = nv.nvmlDeviceGetMemoryInfo(h)
            util = nv.nvmlDeviceGetUtilizationRates(h)
            out.append(GpuReading(gid, name.decode() if isinstance(name, bytes) else str(name), int(util.gpu),
                                  round(mem.used / 2**20, 1), round(mem.total / 2**20, 1)))
    except Exception:           # a GPU gone or an id NVML does not know
        return None
    return out


def format_readings(readings: list[GpuReading]) -> str:
    return "  ".join(f"GPU {r.id}: {r.util_pct}% busy, {r.mem_used_mb:,.0f} / {r.mem_total_mb:,.0f} MB"
                     for r in readings)
