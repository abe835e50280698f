"""Help: keys, what each screen does, where files live, terminals and SSH."""

from __future__ import annotations

from typing import Iterable

from textual.containers import VerticalScroll
from textual.widget import Widget
from textual.widgets import Markdown

from tui.format import short_path
from tui.screens.base import BaseScreen

HELP = """\
# sessrec: session-based next-item recommendation

Data flows one way: a raw click log -> a built dataset -> training runs -> recommendations.
Every screen is a window onto the workspace `{root}`; everything lives there, so quitting the
app loses nothing.

## Keys everywhere

- `F1` or `?` help, `F2` Datasets, `F3` Jobs, `F4` Train, `F5` Runs, `F6` Recommend, `F7` Tune,
  `F8` Serve
- `ctrl+p` command palette: every action by name
- `ctrl+q` quit (asks what to do with running jobs)
- `tab` / `shift+tab` move between fields; arrows move in tables and lists; `escape` closes a dialog

Letters always go to the field you type in; commands are F-keys and ctrl+ keys.

## Datasets (F2)

Each dataset with the state of every pipeline stage (ingest, sessionize, split, items, graph,
encodings, oracle for demos: done, stale, missing, building, failed), its statistics, and the
item-popularity and session-length distributions.
ctrl+n generate a demo dataset - ctrl+o import a log file (RetailRocket, RSC15, Diginetica;
optional published test file) - ctrl+b build what is missing or stale - ctrl+r rebuild from a stage -
ctrl+x (or delete) delete, after a confirmation - ctrl+l re-read.

## Jobs (F3)

Pipelines and training runs are child processes of the app (`python -m engine ... --events jsonl`);
the app stays responsive while they work. Progress per stage, elapsed time, ETA, and the end of
each job's log. ctrl+t cancels (SIGTERM, then SIGKILL after a timeout; a queued job is removed) -
ctrl+l clears finished jobs - enter on a training job shows it on the Train screen. ctrl+g switches
the job policy: share (jobs run together, each with its share of the cores) or queue (one CPU job at
a time, the others wait). A training on a GPU gets a GPU of its own, or waits for one.

## Train (F4)

Dataset, model and its hyperparameters (their defaults: the CPU preset when training on the CPU),
epochs, batch size, learning rate, loss, device (what was detected is shown). Every field comes
from the engine's configs: the same names, choices, defaults and checks as `sessrec train --help`.
ctrl+s starts a run, ctrl+t
stops it cleanly (it keeps `last.pt`; status stopped; `sessrec train --resume RUN` continues),
ctrl+o re-opens an earlier or detached run from its events file (a running one is followed),
ctrl+r resets the hyperparameters. Charts: training loss per step, validation Recall@10 and
NDCG@10 per epoch (the vertical line marks the best epoch). A crash, a CUDA out-of-memory or a
killed process shows its error, a suggestion and the log; the app keeps running.

## Runs (F5)

All runs: model, dataset, status, epochs, best validation Recall@10 / NDCG@10, test Recall@10
(last item and all prefixes), time, device. space selects runs to compare on the chart - ctrl+g
switches the compared curve - ctrl+s sorts (or click a column header) - enter shows config and
events - ctrl+o shows the run on the Train screen - ctrl+r recommends with it.

## Recommend (F6)

Choose a trained run or a baseline (pop, spop, itemknn, sknn on a built dataset) as A, and
optionally a second one as B. A opens on the newest completed run (or session-kNN when no run has
finished yet). Type item ids (spaces or commas, oldest first), or pick popular
items (ctrl+f searches the list, enter adds). The top-10 updates as you type: rank, item, score,
train popularity, and whether the item is already in the session ("in"). Unknown ids are listed
and ignored. ctrl+l clears the session, ctrl+e jumps back to the ids.

## Tune (F7)

Hyperparameter studies (Optuna) of the workspace: pick one to see its trials (state, validation
value, parameters, run id), the best configuration as the `sessrec train` command that trains it
again, and the metric per trial with the best so far. The form starts a study as a job (ctrl+s;
the same study name continues it up to the number of trials), ctrl+t stops it. Each trial is a
run on the Runs screen; the test split is never read.

## Serve (F8)

Serve a finished run or a baseline over HTTP (`sessrec serve`, a background job: F3 shows its log):
model, host, port, runtime (torch or onnx) and an optional API key (given to the server in its
environment, never on its command line). ctrl+s starts it, ctrl+t stops it (it finishes the
requests in flight). While it runs: its address, a `curl` line to try it (ctrl+y copies it, with
the key), requests/s, p50/p99 latency and 4xx/5xx errors per endpoint every second from its
`/metrics`, and the model and reload state from `/health`. ctrl+r reloads it with another run
(the newest finished run is offered first; the app says when one of the same model and dataset
has finished). A server is a light job: one thread, never queued, not counted in the shares.

## Files

- datasets: `{root}/datasets/NAME/` (manifest.json, one folder per stage)
- runs: `{root}/runs/RUN-ID/` (config.json, events.jsonl, best.pt, last.pt)
- job logs: `{root}/logs/JOB-ID.log` (stderr of the job), `JOB-ID.json` (the job record)
- studies: `{root}/tuning/studies.db` (SQLite, `sessrec tune --show`)

The same work without the app: `sessrec --workspace {root} demo`, `sessrec data status`,
`sessrec train --dataset demo --model graph_transformer`, `sessrec runs`,
`sessrec recommend RUN 12 345`.

## Terminals and SSH

The app works over SSH in any terminal of 80x24 or more; charts stack below 100 columns.
Colours: set `TEXTUAL_COLOR_SYSTEM` to `standard` (16 colours), `256` or `truecolor` if the
colours look wrong (e.g. `TEXTUAL_COLOR_SYSTEM=256 sessrec-tui` inside tmux or screen).
If F-keys do not reach the app (some terminals or multiplexers take them), use ctrl+p and pick
the screen by name. A training run started here survives a dropped connection when you
choose "leave running" on quit, or when the app dies: re-open it with F4 then ctrl+o.
"""


class HelpScreen(BaseScreen):
    MODE = "help"
    TITLE_TEXT = "Help"

    def compose_body(self) -> Iterable[Widget]:
        with VerticalScroll(id="help-scroll"):
            yield Markdown(HELP.format(root=short_path(self.controller.ws.root)), id="help-md")

    def on_mount(self) -> None:
        self.query_one("#help-scroll").focus()
