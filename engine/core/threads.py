"""Thread budgets: how many CPU threads an engine process may use while other jobs share the machine.

torch, numpy's BLAS and pyarrow each start one thread per core by default; two such processes on
the same cores slow each other down several times over. The app's job manager therefore gives each
concurrent job a share of the cores:

- at start, through the environment: OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS (read
  by the native libraries when they load). OMP_WAIT_POLICY is left alone: PASSIVE (threads sleep
  between parallel regions) made a training epoch 47% slower on the 2-core dev CPU (20.3 s against
  13.9 s, small demo, hidden 64), and with the cores split between jobs a briefly spinning thread
  spins on its own job's core;
- while it runs, through a budget file (one integer; its path in $SESSREC_THREADS_FILE) that the
  manager rewrites when a job starts or ends. `ThreadBudget.poll()` re-reads it (at most one stat
  per second) and applies a new value to the libraries already loaded.

Nothing here imports torch, numpy or pyarrow: the CLI stays fast, and a library that is not loaded
yet reads the environment (kept up to date by `apply`) when it loads.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from engine.core.atomic import write_text

BUDGET_FILE_ENV = "SESSREC_THREADS_FILE"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
POLL_INTERVAL_S = 1.0


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def thread_shares(cores: int, jobs: int) -> list[int]:
    """Threads of each of `jobs` concurrent jobs on `cores` cores: cores // jobs each (at least 1),
    the remainder to the first ones."""
    if jobs <= 0:
        return []
    base, extra = divmod(max(1, cores), jobs)
    return [max(1, base + (1 if i < extra else 0)) for i in range(jobs)]


def budget_env(threads: int, path: Path | None) -> dict[str, str]:
    """The environment that starts a child with `threads` threads (and its budget file, if any)."""
    env = {var: str(threads) for var in THREAD_ENV_VARS}
    if path is not None:
        env[BUDGET_FILE_ENV] = str(path)
    return env


def write_budget(path: Path, threads: int) -> None:
    """Tell a running child its new budget (atomic: it never reads half a number)."""
    write_text(path, f"{int(threads)}\n")


def read_budget(path: Path) -> int | None:
    try:
        n = int(path.read_text().strip())
    except (OSError, ValueError):
        return None
    return n if n > 0 else None


def _env_threads(environ: Mapping[str, str], var: str = "OMP_NUM_THREADS") -> int | None:
    try:
        n = int(environ.get(var, ""))
    except ValueError:
        return None
    return n if n > 0 else None


def set_compute_threads(n: int, faiss: bool = False) -> None:
    """The one place that sets how many intra-op threads a computation uses: torch's (and ONNX
    Runtime's, which takes torch's count) and, with `faiss` or once faiss is loaded, faiss'.
    torch's count holds for every thread, faiss' OpenMP count only for the thread that sets it (a
    new thread starts with one per core): a scoring thread calls this itself. Imports torch."""
    import torch
    n = max(1, int(n))
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    if faiss or "faiss" in sys.modules:
        try:
            import faiss as faiss_lib
        except ImportError:
            return
        faiss_lib.omp_set_num_threads(n)


class ThreadBudget:
    """This process's thread budget: `apply()` it once at start, `poll()` it in long loops.

    `threads` is None when nobody set a budget (the engine run by hand): then nothing is changed.
    Call `poll()` from the thread that runs the computation: torch's thread count (OpenMP) is a
    setting of the calling thread.
    """

    def __init__(self, threads: int | None, path: Path | None = None, *,
                 interval: float = POLL_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 workers: int = 1) -> None:
        self.threads = threads
        self.path = path
        self.workers = max(1, workers)   # processes of one job on this machine sharing the file's budget
        self.interval = interval
        self._clock = clock
        self._next_poll = clock() + interval
        self._seen = self._signature()
        # OpenBLAS sizes its pool from the environment when numpy loads: change it only when needed
        self._blas_threads = _env_threads(os.environ, "OPENBLAS_NUM_THREADS")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **kw) -> "ThreadBudget":
        """The budget the app gave this process: the budget file's value if it can be read (it may
        have changed since the process was started), else OMP_NUM_THREADS. A data-parallel worker
        (torchrun's LOCAL_WORLD_SIZE) takes its share of the file's budget; OMP_NUM_THREADS is
        already per process."""
        environ = os.environ if environ is None else environ
        path = Path(environ[BUDGET_FILE_ENV]) if environ.get(BUDGET_FILE_ENV) else None
        kw.setdefault("workers", _env_threads(environ, "LOCAL_WORLD_SIZE") or 1)
        budget = cls(None, path, **kw)         # notes the file's signature before reading it
        budget.threads = budget._share(read_budget(path) if path is not None else None) or _env_threads(environ)
        return budget

    def _share(self, n: int | None) -> int | None:
        return None if n is None else max(1, n // self.workers)

    def _signature(self) -> tuple[int, int, int] | None:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def apply(self, with_torch: bool = False) -> None:
        """Hold the libraries to `threads`: the environment (for libraries loaded later and for
        child processes), torch if it is loaded (or `with_torch`: imports it), pyarrow if loaded,
        numpy's BLAS through threadpoolctl if numpy is loaded."""
        n = self.threads
        if n is None:
            return
        for var in THREAD_ENV_VARS:
            os.environ[var] = str(n)
        torch = sys.modules.get("torch")
        if torch is None and with_torch:
            import torch
        if torch is not None and threading.current_thread() is threading.main_thread():
            set_compute_threads(n)
        pa = sys.modules.get("pyarrow")
        if pa is not None:
            pa.set_cpu_count(n)
        if "numpy" in sys.modules and n != self._blas_threads:
            try:
                from threadpoolctl import threadpool_limits
            except ImportError:
                return
            threadpool_limits(limits=n, user_api="blas")
            self._blas_threads = n

    def poll(self, force: bool = False) -> bool:
        """Re-read the budget file if a second has passed (or `force`) and it changed; apply a new
        value. True when the budget changed."""
        if self.path is None:
            return False
        now = self._clock()
        if not force and now < self._next_poll:
            return False
        self._next_poll = now + self.interval
        sig = self._signature()
        if sig is None or sig == self._seen:
            return False
        self._seen = sig
        n = self._share(read_budget(self.path))
        if n is None or n == self.threads:
            return False
        self.threads = n
        self.apply()
        return True


_process_budget: ThreadBudget | None = None


def process_budget() -> ThreadBudget:
    """This process's budget, read from the environment on first use."""
    global _process_budget
    if _process_budget is None:
        _process_budget = ThreadBudget.from_env()
    return _process_budget
