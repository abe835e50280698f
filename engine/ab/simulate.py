"""`sessrec ab simulate`: held-out test sessions of a dataset replayed as users of a server.

Each simulated user is one test session (raw ids and event types, from the dataset's split) with
the id `sim<seed>-<n>`. After each of its events it asks for the top k (`POST /recommend` with the
session so far); when the session's true next item is in the list at rank r (1 = top), the user
clicks it with probability 1 / r^position_bias (a position-based click model: lower ranks are seen
less) and the click goes to `POST /feedback`. An add-to-cart or purchase in the session of an item
the user clicked before is sent as that event. Bounded by the number of sessions and by time;
loopback addresses only (the simulator is a load on a server of this machine).
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import numpy as np

from engine.core.config import SimulateConfig
from engine.core.errors import InputError
from engine.core.schema import Split
from engine.core.workspace import Workspace
from engine.data.sessions import EVENT_TYPES, Sessions
from engine.serve.security import is_loopback


@dataclass
class SimResult:
    sessions: int = 0
    requests: int = 0
    clicks: int = 0
    feedback: int = 0
    errors: int = 0
    listed: int = 0                   # requests whose list held the true next item
    per_arm: dict = field(default_factory=dict)
    seconds: float = 0.0
    stopped: str = "done"             # done | time

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("sessions", "requests", "clicks", "feedback", "errors", "listed",
                                              "per_arm", "seconds", "stopped")}


def check_url(url: str) -> str:
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.hostname:
        raise InputError(f"--url {url!r}: expected http://HOST:PORT")
    if not is_loopback(u.hostname):
        raise InputError(f"--url {url!r}: the simulator sends traffic to loopback addresses only "
                         f"(127.0.0.1, localhost, [::1])")
    return url.rstrip("/")


def test_sessions(ws: Workspace, dataset: str, n: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Up to `n` test sessions (raw ids, event codes) in a seeded order."""
    path = ws.dataset(dataset).split_sessions(Split.TEST)
    if not path.exists():
        raise InputError(f"dataset {dataset!r} has no test split ({path}): build it (sessrec data build {dataset})")
    s = Sessions.read(path)
    order = np.random.default_rng(seed).permutation(len(s.offsets) - 1)[:n]
    return [(s.items[s.offsets[i]:s.offsets[i + 1]], s.events[s.offsets[i]:s.offsets[i + 1]]) for i in order]


def simulate(ws: Workspace, url: str, dataset: str, cfg: SimulateConfig, api_key: str | None = None,
             log=lambda m: None) -> SimResult:
    import httpx
    url = check_url(url)
    sessions = test_sessions(ws, dataset, cfg.sessions, cfg.seed)
    if not sessions:
        raise InputError(f"dataset {dataset!r} has no test sessions")
    headers = {"X-API-Key": api_key} if api_key else {}
    res = SimResult()
    lock = threading.Lock()
    deadline = time.monotonic() + cfg.max_seconds
    t0 = time.perf_counter()
    local = threading.local()
    click_rng = np.random.SeedSequence([cfg.seed, 0xC11C])
    seeds = click_rng.spawn(len(sessions))
    view = EVENT_TYPES.index("view")
    clients: list[httpx.Client] = []

    def client() -> httpx.Client:          # one keep-alive connection per worker thread
        if not hasattr(local, "c"):
            local.c = httpx.Client(base_url=url, headers=headers, timeout=30.0)
            with lock:
                clients.append(local.c)
        return local.c

    def one(i: int) -> None:
        if time.monotonic() > deadline:
            return
        items, events = sessions[i]
        sid = f"sim{cfg.seed}-{i}"
        rng = np.random.default_rng(seeds[i])
        c = client()
        clicked: set[int] = set()
        n_req = n_clk = n_fb = n_err = n_listed = 0
        arm = None
        for pos in range(1, len(items)):
            target, ev = int(items[pos]), int(events[pos])
            if ev != view and target in clicked:            # the funnel of an item it found through us
                n_fb += _feedback(c, sid, target, EVENT_TYPES[ev])
            r = c.post("/recommend", json={"session_items": [int(x) for x in items[:pos]], "k": cfg.k,
                                            "session_id": sid})
            n_req += 1
            if r.status_code != 200:
                n_err += 1
                continue
            body = r.json()
            arm = body.get("arm")
            if target in body["items"]:
                n_listed += 1
                rank = body["items"].index(target) + 1
                if rng.random() < rank ** -cfg.position_bias:
                    clicked.add(target)
                    n_clk += 1
                    n_fb += _feedback(c, sid, target, "click")
        with lock:
            res.sessions += 1
            res.requests += n_req
            res.clicks += n_clk
            res.feedback += n_fb
            res.errors += n_err
            res.listed += n_listed
            a = res.per_arm.setdefault(str(arm), {"sessions": 0, "requests": 0, "clicks": 0})
            a["sessions"] += 1
            a["requests"] += n_req
            a["clicks"] += n_clk

    try:
        with ThreadPoolExecutor(cfg.concurrency, thread_name_prefix="sessrec-sim") as pool:
            for f in [pool.submit(one, i) for i in range(len(sessions))]:
                f.result()
    finally:
        for c in clients:
            c.close()
    res.seconds = round(time.perf_counter() - t0, 2)
    if res.sessions < len(sessions):
        res.stopped = "time"
    log(f"simulated {res.sessions} sessions: {res.requests} requests, {res.clicks} clicks, {res.errors} errors "
        f"({res.seconds:g} s)")
    return res


def _feedback(c, sid: str, item: int, event: str) -> int:
    r = c.post("/feedback", json={"session_id": sid, "item": item, "event": event})
    return int(r.status_code == 202)
