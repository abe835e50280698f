"""`sessrec serve`: uvicorn around the app, with the model loaded before the port opens.

One worker (the default): the server runs in this process; SIGTERM or Ctrl-C finish the requests
in flight and exit 0; SIGHUP reloads the model in the background (as POST /admin/reload does).
Several workers (`--workers N`): uvicorn's supervisor starts N processes on one socket; each loads
the model (a search index is built once, by this process, and read from the run's cache by the
workers), /metrics sums all workers (prometheus_client's multiprocess mode), /admin/reload reaches
every worker through a shared file, and SIGHUP to this process makes uvicorn restart the workers
one by one (each finishes its requests first).
When the port is open a `serving` event (address, model, runtime) goes to the event stream.
With arms (`--arm A=RUN1 --arm B=RUN2`) the server runs an A/B experiment (engine.serve.arms) in one
worker process: every arm is loaded before the port opens, and a shutdown writes out the logs.
"""

from __future__ import annotations

import importlib
import json
import os
import signal
import socket
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from engine.core.errors import InputError
from engine.core.threads import set_compute_threads
from engine.core.workspace import Workspace
from engine.inference.recommend import Recommender
from engine.serve.limits import ConnectionLimits
from engine.serve.scrape import fetch_health
from engine.serve.security import check_bind
from engine.serve.slot import ModelSlot, ReloadBroadcast

WORKER_ENV = "SESSREC_SERVE_WORKER"      # JSON ServeOptions + workspace, read by each worker


@dataclass
class ServeOptions:
    target: str
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    runtime: str = "torch"
    search: str = "auto"
    device: str = "cpu"
    api_key: str | None = None
    admin_key: str | None = None
    insecure: bool = False
    threads: int = 1
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)
    arms: tuple[str, ...] = ()           # "A=RUN" each: an A/B server (then `target` is unused)
    split: str | None = None             # "50,50": the arms' weights (default: equal)
    experiment: str | None = None        # the experiment's name (default: from the arms)


def make_slot(ws: Workspace, opts: ServeOptions, target: str | None = None) -> ModelSlot:
    from engine.core.device import resolve_device
    device = str(resolve_device(opts.device))

    def load(target: str) -> Recommender:
        return Recommender.for_target(ws, target, device=device, runtime=opts.runtime, search=opts.search)
    return ModelSlot(load, target or opts.target)


def make_arms(ws: Workspace, opts: ServeOptions):
    """The ArmSet of an A/B server: every arm's model loaded (a bad one fails here, naming its arm)."""
    from engine.serve.arms import ArmSet
    from engine.serve.experiment import default_experiment_name, parse_arms
    arms = parse_arms(list(opts.arms), opts.split)
    if len(arms) < 2:
        raise InputError("--arm: an A/B test needs at least two arms (--arm A=RUN1 --arm B=RUN2; the same run "
                         "twice is an A/A test)")
    slots = {}
    try:
        for a in arms:
            try:
                slots[a.name] = make_slot(ws, opts, a.target)
            except InputError as e:
                raise InputError(f"--arm {a.name}={a.target}: {e}") from None
        return ArmSet(ws, opts.experiment or default_experiment_name(arms), arms, slots)
    except BaseException:
        for s in slots.values():
            s.close()
        raise


def serve(ws: Workspace, opts: ServeOptions, on_ready: Callable[[dict], None]) -> int:
    if opts.workers < 1:
        raise InputError("--workers must be >= 1")
    check_bind(opts.host, opts.api_key, opts.insecure, opts.admin_key)
    missing = []
    for m in ("fastapi", "uvicorn", "prometheus_client"):
        try:
            importlib.import_module(m)
        except ImportError:
            missing.append(m)
    if missing:
        raise InputError(f"serving needs {', '.join(missing)}: pip install fastapi uvicorn prometheus-client")
    if opts.threads < 1:
        raise InputError("--threads must be >= 1")
    if opts.arms and opts.workers > 1:
        raise InputError("--arm: an A/B server runs in one worker process (its experiment's phases and logs "
                         "are kept by that process); leave out --workers")
    # one thread by default: a request's work is small (batching, not threads, makes a loaded server
    # fast), and spin-waiting OpenMP workers would take the cores from the event loop and the clients
    set_compute_threads(opts.threads, faiss=True)
    if opts.arms:
        arms = make_arms(ws, opts)
        return _serve_one(arms.slots[arms.names[0]], opts, on_ready, arms)
    if opts.workers == 1:                 # a bad target or run fails in make_slot, before the port opens
        return _serve_one(make_slot(ws, opts), opts, on_ready)
    return _serve_many(ws, opts, on_ready)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say so, and without it
    # Nagle and delayed ACKs add ~40 ms to every request on a keep-alive connection
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OverflowError:               # a port outside 0..65535 (the CLI refuses those first)
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: a port is a number from 0 to 65535") from None
    except OSError as e:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {e.strerror} (another server there? try --port 0)") from e
    sock.set_inheritable(True)
    return sock


def ready_event(slot: ModelSlot, opts: ServeOptions, port: int, arms=None) -> dict:
    m = slot.current.rec.meta
    host = f"[{opts.host}]" if ":" in opts.host else opts.host
    return {"type": "serving", "url": f"http://{host}:{port}", "host": opts.host, "port": port,
            "model": m.get("model"), "run_id": m.get("run_id"), "dataset": m.get("dataset"),
            "runtime": m.get("runtime", "torch"), "search": slot.current.rec.search_info().get("kind"),
            "workers": opts.workers, "api_key_required": bool(opts.api_key),
            "experiment": arms.info() if arms is not None else None}


def _serve_one(slot: ModelSlot, opts: ServeOptions, on_ready: Callable[[dict], None], arms=None) -> int:
    import uvicorn

    from engine.serve.app import ServeSettings, create_app
    app = create_app(slot, ServeSettings(api_key=opts.api_key, admin_key=opts.admin_key), arms=arms)
    sock = _bind(opts.host, opts.port)
    port = sock.getsockname()[1]

    class Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started:
                on_ready(ready_event(slot, opts, port, arms))

    server = Server(_config(app, opts))
    # uvicorn handles SIGINT/SIGTERM while it runs (finishing requests in flight), then re-raises the
    # signal: a no-op handler underneath makes that a normal exit 0 instead of the CLI's "interrupted"
    previous = {sig: signal.signal(sig, _ignore) for sig in (signal.SIGINT, signal.SIGTERM)}
    # SIGHUP: every arm from its run's newest checkpoint (each its own phase change)
    hup = (lambda *_: [s.reload() for s in arms.slots.values()]) if arms is not None else (lambda *_: slot.reload())
    previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, hup)
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if arms is not None:
            arms.close()             # after the last request: every answered list is in the log
        else:
            slot.close()
        sock.close()
    return 0


def _ignore(signum, frame) -> None:
    pass


def _config(app, opts: ServeOptions, **kw):
    """uvicorn's settings for one server: its HTTP protocol with request deadlines and a connection
    cap (engine.serve.protocol), which its worker processes get with the config."""
    import uvicorn

    from engine.serve.protocol import attach_limits
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=30, **kw)
    attach_limits(config, opts.limits)
    return config


def _serve_many(ws: Workspace, opts: ServeOptions, on_ready: Callable[[dict], None]) -> int:
    slot = make_slot(ws, opts)            # a bad target or run fails here, before the port opens
    sock = _bind(opts.host, opts.port)
    port = sock.getsockname()[1]
    shared = Path(tempfile.mkdtemp(prefix="sessrec-serve-"))
    (shared / "metrics").mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared / "metrics")
    os.environ[WORKER_ENV] = json.dumps({"workspace": str(ws.root), "options": asdict(opts),
                                         "broadcast": str(shared / "reload.json")})
    ready = ready_event(slot, opts, port)
    slot.close()                  # the workers load their own; this one only checked the target
    del slot                      # and holds no model (or item table) while they run
    local = "127.0.0.1" if opts.host in ("0.0.0.0", "") else "::1" if opts.host == "::" else opts.host

    def announce() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            if fetch_health(f"http://{'[' + local + ']' if ':' in local else local}:{port}", timeout=2):
                on_ready(ready)
                return
            time.sleep(0.2)
    threading.Thread(target=announce, daemon=True).start()
    config = _config("engine.serve.server:worker_app", opts, factory=True, workers=opts.workers)
    try:
        from uvicorn.supervisors import Multiprocess
        Multiprocess(config, sockets=[sock]).run()
    finally:
        sock.close()
        import shutil
        shutil.rmtree(shared, ignore_errors=True)
    return 0


def worker_app():
    """The app of one worker process (uvicorn factory; the parent passes its options in the env)."""
    from engine.serve.app import ServeSettings, create_app
    spec = json.loads(os.environ[WORKER_ENV])
    options = spec["options"]
    opts = ServeOptions(**{**options, "limits": ConnectionLimits(**options["limits"])})
    set_compute_threads(opts.threads, faiss=True)
    broadcast = ReloadBroadcast(Path(spec["broadcast"]))
    _, latest = broadcast.read()              # a worker (re)started after a reload serves its target
    slot = make_slot(Workspace.open(spec["workspace"]), replace(opts, target=latest or opts.target))
    broadcast.watch(slot)
    return create_app(slot, ServeSettings(api_key=opts.api_key, admin_key=opts.admin_key, broadcast=broadcast))
