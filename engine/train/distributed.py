"""Process groups for data-parallel training: set up from torchrun's environment, torn down at the end.

torchrun (or `sessrec train --nproc N`, which starts it) gives each worker RANK, WORLD_SIZE,
LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT. The group has one backend per device
type: gloo for CPU tensors (and for the object collectives: configs, checkpoints, RNG states) and,
where CUDA is there, NCCL for CUDA tensors; collectives pick the backend by their tensors' device.
Every collective has a timeout (`SESSREC_DIST_TIMEOUT` seconds): a worker that died or hangs fails
the others' collectives with `WorkerLost` instead of blocking them forever.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import torch
import torch.distributed as dist

from engine.core.errors import InputError
from engine.core.schema import ErrorKind

TIMEOUT_ENV = "SESSREC_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
T = TypeVar("T")


class WorkerLost(RuntimeError):
    """Another worker crashed, was killed, or did not answer within the timeout."""

    error_kind = ErrorKind.WORKER_LOST


def timeout_s(environ: Mapping[str, str] | None = None) -> float:
    env = os.environ if environ is None else environ
    raw = env.get(TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise InputError(f"${TIMEOUT_ENV}: expected a number of seconds > 0, got {raw!r}")
    return value


def peer_failure(exc: BaseException) -> bool:
    """An error raised by a collective because a peer is gone (gloo raises a plain RuntimeError)."""
    if isinstance(exc, WorkerLost):
        return False
    kinds = tuple(k for k in (getattr(dist, "DistBackendError", None), getattr(dist, "DistNetworkError", None),
                              getattr(dist, "DistStoreError", None)) if k is not None)
    if kinds and isinstance(exc, kinds):
        return True
    msg = str(exc)
    return isinstance(exc, RuntimeError) and ("gloo" in msg or "NCCL" in msg or "Connection closed" in msg
                                              or "Connection reset" in msg or "Timed out" in msg)


@dataclass
class DistContext:
    """This worker's place in the group, and the collectives the training loop needs."""

    rank: int
    world: int
    local_rank: int
    local_world: int
    timeout: float

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ---- setup -----------------------------------------------------------------------------------
    @classmethod
    def setup(cls, environ: Mapping[str, str] | None = None) -> "DistContext":
        """Join the group described by torchrun's variables (every worker calls this)."""
        env = os.environ if environ is None else environ
        try:
            rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
            local_rank = int(env.get("LOCAL_RANK", "0"))
            local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        except (KeyError, ValueError) as e:
            raise InputError(f"distributed training: RANK/WORLD_SIZE/LOCAL_RANK not set by torchrun ({e})") from None
        timeout = timeout_s(env)
        cuda = torch.cuda.is_available()
        if cuda and local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)      # "cuda" without an index is this worker's GPU
        # NCCL only for CUDA tensors; CPU tensors and pickled objects always go through gloo
        backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
        if not dist.is_initialized():
            dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                    timeout=datetime.timedelta(seconds=timeout))
        return cls(rank, world, local_rank, local_world, timeout)

    def teardown(self) -> None:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:          # a group broken by a lost worker: nothing left to close
                pass

    def device(self, device: torch.device) -> torch.device:
        """This worker's device: its own GPU (by local rank) on CUDA."""
        if device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    # ---- sharding --------------------------------------------------------------------------------
    def split(self, n: int) -> tuple[int, int]:
        """This rank's contiguous part [lo, hi) of n items (sizes differ by at most one)."""
        return n * self.rank // self.world, n * (self.rank + 1) // self.world

    def split_batches(self, n: int, batch_size: int) -> tuple[int, int]:
        """This rank's contiguous part of n items, cut at multiples of `batch_size`: each rank
        evaluates whole batches of the single-process evaluation, so its scores are those numbers."""
        n_batches = -(-n // batch_size)
        lo, hi = n_batches * self.rank // self.world, n_batches * (self.rank + 1) // self.world
        return min(n, lo * batch_size), min(n, hi * batch_size)

    # ---- collectives (a lost peer is WorkerLost) --------------------------------------------------
    def guard(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except Exception as e:
            if peer_failure(e):
                raise self.lost(e) from e
            raise

    def lost(self, exc: BaseException) -> WorkerLost:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return WorkerLost(f"distributed training failed on rank {self.rank}: another worker crashed, was "
                          f"killed or did not answer within {self.timeout:g}s (${TIMEOUT_ENV}); {first}")

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        self.guard(lambda: dist.all_reduce(t, op=dist.ReduceOp.SUM))
        return t

    def all_reduce_max(self, t: torch.Tensor) -> torch.Tensor:
        self.guard(lambda: dist.all_reduce(t, op=dist.ReduceOp.MAX))
        return t

    def gather_cat(self, t: torch.Tensor) -> torch.Tensor:
        """Every rank's 1-d `t` (lengths may differ), concatenated in rank order, on every rank."""
        dtype = t.dtype
        x = t.to(torch.uint8) if dtype == torch.bool else t      # gloo has no bool collectives
        n = torch.tensor([x.numel()], dtype=torch.long, device=x.device)
        sizes = [torch.zeros_like(n) for _ in range(self.world)]
        self.guard(lambda: dist.all_gather(sizes, n))
        counts = [int(s) for s in sizes]
        m = max(counts)
        padded = torch.zeros(m, dtype=x.dtype, device=x.device)
        padded[:x.numel()] = x
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        self.guard(lambda: dist.all_gather(parts, padded))
        out = torch.cat([p[:c] for p, c in zip(parts, counts)])
        return out.to(torch.bool) if dtype == torch.bool else out

    def all_gather_object(self, obj: Any) -> list[Any]:
        out: list[Any] = [None] * self.world
        self.guard(lambda: dist.all_gather_object(out, obj))
        return out

    def broadcast_object(self, obj: Any = None) -> Any:
        """Rank 0's `obj` on every rank (pickled; CPU tensors inside are fine)."""
        box = [obj if self.is_main else None]
        self.guard(lambda: dist.broadcast_object_list(box, src=0))
        return box[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers, in place, on every rank."""
        for t in module.state_dict().values():
            self.guard(lambda t=t: dist.broadcast(t, src=0))


def to_cpu(obj: Any) -> Any:
    """A copy of `obj` with every tensor inside on the CPU (to send a checkpoint through gloo)."""
    if isinstance(obj, torch.Tensor):
        return obj.cpu()
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_cpu(v) for v in obj)
    return obj
