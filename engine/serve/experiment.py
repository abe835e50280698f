"""A/B experiments in the service: arms, sticky assignment, phases, and what is logged.

    sessrec serve --arm A=RUN1 --arm B=RUN2 --split 50,50 [--experiment NAME]

**Assignment.** A request's client `session_id` (any text of 1-128 characters the client keeps for
the browsing session) picks its arm: `bucket = blake2b(experiment name + NUL + session_id, 8 bytes)
as an unsigned big-endian integer mod 10,000`, and the arms own consecutive bucket ranges in their
order on the command line, sized by the split (50,50: buckets 0-4999 are A, 5000-9999 are B).
The same session id lands in the same arm for as long as the split stands, in every process and
after a restart; another experiment name reshuffles it (`assign_bucket`, `arm_index`).

**Phases.** The split or an arm's model changing (`POST /admin/arms`, `POST /admin/reload` of one
arm) starts a new phase: requests before and after a change are not one comparison (a reweight
moves sessions between arms, a swapped model is another treatment). The state file
(`experiment.json`, rewritten atomically) lists every phase with its start time, split and the
target of each arm; every logged line names its phase, and `sessrec ab report` reads one phase
(the latest by default). A server started again with the same arms continues the latest phase.

**Logs** (`engine.serve.eventlog`, one background writer each): an *impression* per served list
(`id`, `t` (unix s), `phase`, `session`, `arm`, `target`, `items` (raw ids, best first), `k`, `n`
(session items sent)) and a *feedback* line per `POST /feedback` (`t`, `phase`, `session`, `arm`,
`item`, `event`: click | addtocart | transaction).
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from bisect import bisect_right
from dataclasses import asdict, dataclass

from engine.core.atomic import write_json
from engine.core.errors import InputError
from engine.core.workspace import ExperimentDir

BUCKETS = 10_000
ARM_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$")
FEEDBACK_EVENTS = ("click", "addtocart", "transaction")
STATE_VERSION = 1


@dataclass(frozen=True)
class Arm:
    name: str
    target: str                  # a run id or baseline:NAME@DATASET
    weight: float                # share of the buckets, as given (normalised in `cutoffs`)


def parse_arms(specs: list[str], split: str | None = None) -> list[Arm]:
    """`--arm A=RUN` (repeatable) and `--split 50,50` (default: equal) as arms; InputError naming the
    flag and what was expected."""
    arms: list[tuple[str, str]] = []
    for s in specs:
        name, sep, target = s.partition("=")
        name, target = name.strip(), target.strip()
        if not sep or not target:
            raise InputError(f"--arm {s!r}: expected NAME=RUN (e.g. --arm A=gt-1 --arm B=baseline:pop@demo)")
        if not ARM_RE.match(name):
            raise InputError(f"--arm {s!r}: an arm name is 1-16 letters, digits, '_' or '-', "
                             f"starting with a letter or digit")
        if name in (a for a, _ in arms):
            raise InputError(f"--arm {s!r}: arm {name!r} is given twice")
        arms.append((name, target))
    weights = parse_split(split, len(arms)) if split else [1.0] * len(arms)
    return [Arm(n, t, w) for (n, t), w in zip(arms, weights)]


def parse_split(split: str, n_arms: int) -> list[float]:
    parts = [p.strip() for p in split.split(",")]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        raise InputError(f"--split {split!r}: expected {n_arms} numbers separated by commas "
                         f"(e.g. 50,50)") from None
    if len(weights) != n_arms:
        raise InputError(f"--split {split!r}: {len(weights)} weight(s) for {n_arms} arm(s); give one per --arm")
    return check_weights(weights, "--split")


def check_weights(weights: list[float], what: str) -> list[float]:
    if any(not (w >= 0) or w == float("inf") for w in weights) or sum(weights) <= 0:
        raise InputError(f"{what} {weights}: weights are numbers >= 0 with a positive sum")
    return [float(w) for w in weights]


def assign_bucket(experiment: str, session_id: str) -> int:
    digest = hashlib.blake2b(f"{experiment}\x00{session_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def cutoffs(weights: list[float]) -> list[int]:
    """Bucket upper bounds per arm (exclusive): arm i owns [cut[i-1], cut[i])."""
    total = sum(weights)
    acc, out = 0.0, []
    for w in weights:
        acc += w
        out.append(round(BUCKETS * acc / total))
    out[-1] = BUCKETS
    return out


def arm_index(cut: list[int], bucket: int) -> int:
    return bisect_right(cut, bucket)


class Experiment:
    """The arms of a running experiment, its current phase and its state file. `route` is cheap (a
    hash and a bisection) and lock-free: a change swaps the whole routing tuple at once."""

    def __init__(self, folder: ExperimentDir, arms: list[Arm], run_ids: dict[str, str | None]) -> None:
        self.folder, self.name = folder, folder.name
        self._lock = threading.Lock()
        self._state = self._open(arms, run_ids)
        self._routing = (self._state["phases"][-1]["phase"], [a.name for a in arms],
                         cutoffs([a.weight for a in arms]))
        self.arms = list(arms)

    # ---- requests --------------------------------------------------------------------------------
    def route(self, session_id: str) -> tuple[int, str]:
        """(phase, arm name) of a session id."""
        phase, names, cut = self._routing
        return phase, names[arm_index(cut, assign_bucket(self.name, session_id))]

    @property
    def phase(self) -> int:
        return self._routing[0]

    # ---- changes ---------------------------------------------------------------------------------
    def reweight(self, weights: list[float]) -> int:
        """A new split (one weight per arm, in order): a new phase; returns its number."""
        weights = check_weights(weights, "split")
        if len(weights) != len(self.arms):
            raise InputError(f"split: {len(weights)} weight(s) for {len(self.arms)} arm(s)")
        with self._lock:
            self.arms = [Arm(a.name, a.target, w) for a, w in zip(self.arms, weights)]
            return self._new_phase("split")

    def swapped(self, arm: str, target: str, run_id: str | None) -> int:
        """Arm `arm` now serves `target`: a new phase; returns its number."""
        with self._lock:
            self.arms = [Arm(a.name, target, a.weight) if a.name == arm else a for a in self.arms]
            self._runs[arm] = run_id
            return self._new_phase(f"arm {arm} -> {target}")

    def info(self) -> dict:
        phase, names, cut = self._routing
        return {"name": self.name, "phase": phase,
                "arms": [{**asdict(a), "share": round((c - lo) / BUCKETS, 4), "run_id": self._runs.get(a.name)}
                         for a, lo, c in zip(self.arms, [0, *cut[:-1]], cut)]}

    # ---- state -----------------------------------------------------------------------------------
    def _open(self, arms: list[Arm], run_ids: dict[str, str | None]) -> dict:
        import json
        self._runs = dict(run_ids)
        state = None
        if self.folder.state.exists():
            try:
                state = json.loads(self.folder.state.read_text())
            except (OSError, ValueError) as e:
                raise InputError(f"{self.folder.state}: not a readable experiment state ({e}); move it "
                                 f"away or choose another --experiment") from None
        if state is None:
            state = {"version": STATE_VERSION, "name": self.name, "buckets": BUCKETS, "phases": []}
        last = state["phases"][-1] if state["phases"] else None
        if last is None or last["arms"] != self._phase_arms(arms):
            state["phases"].append(self._phase_record(len(state["phases"]) + 1, arms, "start"))
            self._save(state)
        return state

    def _phase_arms(self, arms: list[Arm]) -> list[dict]:
        return [{"name": a.name, "target": a.target, "weight": a.weight, "run_id": self._runs.get(a.name)}
                for a in arms]

    def _phase_record(self, n: int, arms: list[Arm], why: str) -> dict:
        return {"phase": n, "started": round(time.time(), 3), "why": why, "arms": self._phase_arms(arms)}

    def _new_phase(self, why: str) -> int:
        n = self._state["phases"][-1]["phase"] + 1
        self._state["phases"].append(self._phase_record(n, self.arms, why))
        self._save(self._state)
        self._routing = (n, [a.name for a in self.arms], cutoffs([a.weight for a in self.arms]))
        return n

    def _save(self, state: dict) -> None:
        write_json(self.folder.state, state, "experiment state")


def default_experiment_name(arms: list[Arm]) -> str:
    """`ab-` and a hash of the arms and targets: the same command line continues the same experiment
    (and keeps every session in its arm)."""
    key = ",".join(f"{a.name}={a.target}" for a in arms)
    return "ab-" + hashlib.blake2b(key.encode(), digest_size=4).hexdigest()
