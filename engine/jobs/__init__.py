"""The job runner: the engine's long work (pipelines, training, tuning, servers) as child processes
of the app (or of a script such as `bench/concurrency.py`).

    requests.py    what a job asks for, typed, and the command line it spells (one rule: core.argv)
    records.py     a job's state (`Job`, progress, log tail) and its record on disk (history)
    child.py       the child process: start, stdout lines, signals, exit in words
    scheduler.py   how jobs share the machine: cores, GPUs, the share/queue policy
    manager.py     `JobManager`, which puts these together on an asyncio loop
"""

from engine.jobs.child import describe_exit, engine_command
from engine.jobs.manager import JobManager, run_to_end
from engine.jobs.records import ACTIVE, FINISHED, RUNNING, TAIL_LINES, Job, StageProgress
from engine.jobs.requests import (
                                  BuildRequest,
                                  DeleteRequest,
                                  DemoRequest,
                                  ImportRequest,
                                  JobRequest,
                                  ServeRequest,
                                  TrainRequest,
                                  TuneRequest,
)
from engine.jobs.scheduler import LIGHT_KINDS, JobSettings, Scheduler

__all__ = ["ACTIVE", "FINISHED", "LIGHT_KINDS", "RUNNING", "TAIL_LINES", "BuildRequest", "DeleteRequest",
           "DemoRequest", "ImportRequest", "Job", "JobManager", "JobRequest", "JobSettings", "Scheduler",
           "ServeRequest", "StageProgress", "TrainRequest", "TuneRequest", "describe_exit", "engine_command",
           "run_to_end"]
