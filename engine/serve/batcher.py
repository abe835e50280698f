"""One scoring thread per model in service: requests queue up while a batch is scored, and the
next batch takes everything queued (no timer, so a lone request waits for nothing). Under load
one pass over the model and the item table answers many requests. (A lone small request skips the
thread: the app scores it on the event loop, see `engine.serve.app`.)"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass

import torch

from engine.core.threads import set_compute_threads
from engine.inference.recommend import Recommender
from engine.serve.schemas import MAX_BATCH_SESSIONS

_STOP = object()


@dataclass
class _Job:
    sessions: list[list[int]]
    k: int
    exclude: bool
    future: Future
    opts: tuple = (None, False)     # (engine.inference.rules.Rules or None, explain)


class Batcher:
    def __init__(self, rec: Recommender, max_sessions: int = MAX_BATCH_SESSIONS) -> None:
        self.rec, self.max_sessions = rec, max_sessions
        self.threads = torch.get_num_threads()      # what the server set (set_compute_threads)
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="sessrec-batcher", daemon=True)
        self._thread.start()

    def submit(self, sessions: list[list[int]], k: int, exclude: bool, opts: tuple = (None, False)) -> Future:
        f: Future = Future()
        self._q.put(_Job(sessions, k, exclude, f, opts))
        return f

    def close(self) -> None:
        """Stop after the jobs already queued are answered."""
        self._q.put(_STOP)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _loop(self) -> None:
        set_compute_threads(self.threads, faiss=True)
        while True:
            job = self._q.get()
            if job is _STOP:
                return
            jobs, n, stop = [job], len(job.sessions), False
            while n < self.max_sessions:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                jobs.append(nxt)
                n += len(nxt.sessions)
            self._run(jobs)
            if stop:
                return

    def _run(self, jobs: list[_Job]) -> None:
        # one pass per distinct request shape: k, exclusion, rules (hashable) and explain
        groups: dict[tuple, list[_Job]] = {}
        for j in jobs:
            groups.setdefault((j.k, j.exclude, *j.opts), []).append(j)
        for (k, exclude, rules, explain), group in groups.items():
            try:
                recs = self.rec.recommend_many([s for j in group for s in j.sessions], k, exclude, rules, explain)
            except BaseException as e:  # answered as an error to each request, the thread lives on
                for j in group:
                    j.future.set_exception(e)
                continue
            i = 0
            for j in group:
                j.future.set_result(recs[i:i + len(j.sessions)])
                i += len(j.sessions)
