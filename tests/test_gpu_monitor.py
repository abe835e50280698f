"""GPU readings through NVML: a fake pynvml module (no GPU here), and nothing raised without one."""

from __future__ import annotations

import sys
import types

import engine.core.gpu_monitor as gm


def fake_pynvml(fail_init: bool = False) -> types.ModuleType:
    m = types.ModuleType("pynvml")

    def init():
        if fail_init:
            raise RuntimeError("NVML Shared Library Not Found")
    m.nvmlInit = init
    m.nvmlDeviceGetHandleByIndex = lambda i: ("idx", i)
    m.nvmlDeviceGetHandleByUUID = lambda u: ("uuid", u)
    m.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3" if h[0] == "idx" else "NVIDIA A100"
    m.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=3 * 2**30, total=80 * 2**30)
    m.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=87 if h[0] == "idx" else 5)
    return m


def test_readings_from_nvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    monkeypatch.setattr(gm, "_nvml", None)
    r = gm.read_gpus(["1", "GPU-8f3c"])
    assert r == [gm.GpuReading("1", "NVIDIA H100 80GB HBM3", 87, 3072.0, 81920.0),
                 gm.GpuReading("GPU-8f3c", "NVIDIA A100", 5, 3072.0, 81920.0)]
    assert gm.format_readings(r[:1]) == "GPU 1: 87% busy, 3,072 / 81,920 MB"
    assert gm.read_gpus(["not-a-number"]) is None


def test_no_driver_means_no_readings(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(fail_init=True))
    monkeypatch.setattr(gm, "_nvml", None)
    assert gm.read_gpus(["0"]) is None
    monkeypatch.setitem(sys.modules, "pynvml", None)          # the package is not installed
    monkeypatch.setattr(gm, "_nvml", None)
    assert gm.read_gpus(["0"]) is None
