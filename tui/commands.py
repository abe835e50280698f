"""Command palette (ctrl+p): every action of every screen, by name."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

# (title, mode, action, help)
ACTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("Datasets: show", "datasets", "noop", "F2: datasets, their stages, stats and distributions"),
    ("Datasets: generate demo dataset", "datasets", "new_demo", "ctrl+n: generate a demo (tiny, small, full) and build it"),
    ("Datasets: import a file", "datasets", "import_file", "ctrl+o: RetailRocket, RSC15 or Diginetica log"),
    ("Datasets: build selected", "datasets", "build", "ctrl+b: run the stages that are missing or stale"),
    ("Datasets: rebuild selected", "datasets", "rebuild", "ctrl+r: rerun a stage and everything after it"),
    ("Datasets: delete selected", "datasets", "delete", "ctrl+x: delete the dataset folder (asks first)"),
    ("Datasets: refresh", "datasets", "refresh", "ctrl+l: read the workspace again"),
    ("Jobs: show", "jobs", "noop", "F3: running and recent jobs, progress and logs"),
    ("Jobs: cancel selected", "jobs", "cancel", "ctrl+t: SIGTERM, then SIGKILL after a timeout"),
    ("Jobs: clear finished", "jobs", "clear", "ctrl+l: forget finished jobs (their logs stay on disk)"),
    ("Jobs: switch policy (share / queue)", "jobs", "policy",
     "ctrl+g: run CPU jobs together with the cores split, or one at a time"),
    ("Jobs: open selected run", "jobs", "open_run", "enter: show a training job on the Train screen"),
    ("Train: show", "train", "noop", "F4: train a model, live charts"),
    ("Train: start training", "train", "start", "ctrl+s: start a run with the form's settings"),
    ("Train: stop the run", "train", "stop", "ctrl+t: stop cleanly (checkpoint kept, status stopped)"),
    ("Train: re-open a run", "train", "reopen", "ctrl+o: follow a detached or earlier run from its events"),
    ("Train: reset hyperparameters", "train", "reset_params", "ctrl+r: the model's defaults again"),
    ("Runs: show", "runs", "noop", "F5: all runs, sortable; compare curves"),
    ("Runs: toggle selection", "runs", "toggle", "space: select runs to compare"),
    ("Runs: sort by column", "runs", "sort", "ctrl+s: sort by the column under the cursor (again: reverse)"),
    ("Runs: open details", "runs", "details", "enter: config and events of the run"),
    ("Runs: cycle compared metric", "runs", "cycle_metric", "ctrl+g: val Recall@10, val NDCG@10, loss"),
    ("Runs: show run on Train screen", "runs", "open_train", "ctrl+o: live view and charts of the run"),
    ("Runs: recommend with run", "runs", "recommend", "ctrl+r: open Recommend with this run"),
    ("Runs: refresh", "runs", "refresh", "ctrl+l: read the runs folder again"),
    ("Recommend: show", "recommend", "noop", "F6: top-10 next items for a typed session"),
    ("Recommend: clear the session", "recommend", "clear", "ctrl+l: empty the item ids"),
    ("Recommend: add highlighted popular item", "recommend", "add_popular", "enter in the list"),
    ("Recommend: focus the item ids", "recommend", "focus_ids", "ctrl+e: type ids"),
    ("Recommend: search popular items", "recommend", "focus_search", "ctrl+f: filter the popular list"),
    ("Help: keys and files", "help", "noop", "F1 or ?: what each screen does, where files live"),
)


class SessrecCommands(Provider):
    """All app actions in the palette; picking one switches screen and runs the action there."""

    def _commands(self):
        app = self.app
        for title, mode, action, help_text in ACTIONS:
            yield title, partial(app.run_on, mode, action), help_text  # type: ignore[attr-defined]
        yield "Quit", app.action_quit, "ctrl+q: asks first when jobs are running"

    async def discover(self) -> Hits:
        for title, cb, help_text in self._commands():
            yield DiscoveryHit(title, cb, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, cb, help_text in self._commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), cb, help=help_text)
