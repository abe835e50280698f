"""Runs: their event stream (`events`), the one reducer of it (`state`) and the store that lists a
workspace's runs through it, with the lock that says a run is alive (`engine.core.locks`).

Nothing here imports torch: `sessrec runs` and the app read runs without loading a model.
"""

from engine.core.locks import RunLock, lock_holder
from engine.runs.events import EventTail, EventWriter, RunEvent, parse_event, read_events
from engine.runs.state import RunState
from engine.runs.store import RunStore, list_runs, new_run_id, read_run

__all__ = ["EventTail", "EventWriter", "RunEvent", "RunLock", "RunState", "RunStore", "list_runs",
           "lock_holder", "new_run_id", "parse_event", "read_events", "read_run"]
