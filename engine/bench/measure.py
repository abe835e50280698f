"""Wall time and peak resident memory of a block of code (Linux: VmHWM, reset per block)."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from engine.core.atomic import write_json


def _reset_peak() -> bool:
    # writing 5 to clear_refs resets the high-water mark (VmHWM) of this process (Linux >= 4.0)
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return (kb or 0) / 1024


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_rss_mb: float = 0.0    # process peak during the block (includes what was resident before)
    start_rss_mb: float = 0.0


@contextlib.contextmanager
def measure() -> Iterator[Measurement]:
    m = Measurement()
    exact = _reset_peak()
    m.start_rss_mb = rss_mb()
    t0 = time.perf_counter()
    try:
        yield m
    finally:
        m.seconds = time.perf_counter() - t0
        hwm = _status_kb("VmHWM") if exact else None
        m.peak_rss_mb = (hwm / 1024) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    info = {"host": platform.node(), "platform": platform.platform(), "python": platform.python_version(),
            "cpus": os.cpu_count()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def result_path(name: str) -> Path:
    """Default JSON path of a benchmark result: bench/results/<name>-<timestamp>.json."""
    return Path("bench") / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"


def save_result(name: str, obj: dict, out: Path | None = None) -> Path:
    """Write `obj` to `out`, or to its default name inside `out` when that is a folder (a benchmark
    that ran for minutes is not lost to `--out DIR`)."""
    out = out / result_path(name).name if out is not None and out.is_dir() else out or result_path(name)
    write_json(out, obj)
    return out


def dumps(obj: dict) -> str:
    return json.dumps(obj, indent=2, default=str)
