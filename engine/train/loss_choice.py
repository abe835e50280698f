"""`--loss auto` (the default): full softmax when its logits fit in memory, sampled softmax otherwise.

Full-softmax CE materialises [batch, V] logits; with their softmax, gradient and a low-precision
copy that is about `LOGITS_FACTOR` float32 tensors of that shape. The choice compares those bytes
with a share of the memory the run can use: on CUDA the device's free memory, on CPU the memory
the OS reports available. An explicit `--loss` is never changed. The choice is made once, when a
new run is prepared (a resumed run keeps its saved loss), and reported as a log line and in the
run's config.json ("loss_choice").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from engine.core.schema import Loss

LOGITS_FACTOR = 4          # float32 [B, V] tensors alive at the peak: logits, softmax/grad, copies
CUDA_SHARE = 0.5           # of the device's free memory: the model, activations and graph need the rest
CPU_SHARE = 0.25           # of available RAM: the machine is shared, the dataset is in RAM too


@dataclass(frozen=True)
class LossChoice:
    loss: str                  # "ce" or "sampled"
    logits_bytes: int          # estimated peak bytes of the full-softmax logits
    budget_bytes: int          # what they had to fit in
    device: str
    message: str

    def to_dict(self) -> dict:
        return asdict(self)


def full_softmax_bytes(batch_size: int, n_items: int, factor: int = LOGITS_FACTOR) -> int:
    """Estimated peak bytes of full-softmax CE: `factor` float32 [batch, n_items] tensors."""
    return int(batch_size) * int(n_items) * 4 * int(factor)


def choose_loss(batch_size: int, n_items: int, budget_bytes: int, device: str = "cpu") -> LossChoice:
    """Full softmax ("ce") when its logits fit in `budget_bytes`, else "sampled"."""
    need = full_softmax_bytes(batch_size, n_items)
    loss = Loss.CE.value if need <= budget_bytes else Loss.SAMPLED.value
    gib = 2 ** 30
    why = "fit" if loss == Loss.CE.value else "do not fit"
    message = (f"loss auto: {loss} (full-softmax logits, batch {batch_size:,} x {n_items:,} items, "
               f"~{need / gib:.2f} GiB {why} in {budget_bytes / gib:.2f} GiB on {device})")
    return LossChoice(loss, need, int(budget_bytes), device, message)


def memory_budget(device: str) -> int:
    """Bytes the logits may take on `device` ("cuda[:i]" or "cpu"): a share of what is free."""
    if device.startswith("cuda"):
        import torch
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * CUDA_SHARE)
    return int(_available_ram() * CPU_SHARE)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import os
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 4 * 2 ** 30     # unknown: assume a small machine


def resolve_loss(loss: str, batch_size: int, n_items: int, device: str) -> LossChoice | None:
    """The choice for `loss` "auto" (None for an explicit loss, which is kept as given)."""
    if loss != Loss.AUTO.value:
        return None
    return choose_loss(batch_size, n_items, memory_budget(device), device)
