"""The data pipeline: stages, their cache keys, and `build` / `status`.

    ingest -> sessionize -> split -> items -> graph -> encodings      (+ oracle for demo datasets)

Each stage reads its inputs from upstream stage folders, writes its outputs into a fresh temp folder
that is swapped in atomically, and records in the manifest: its key (a hash of its parameters, the
keys of the stages it depends on, and for `ingest` the content fingerprint of the raw files), its
outputs (size and a quick content check per file), stats and timing. A stage whose key is unchanged
and whose output files still match their record is skipped; a changed parameter or input changes
that stage's key and therefore every downstream key; a changed output file makes its stage stale
(rebuilt, with everything downstream, by the next build).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from engine.core.atomic import atomic_dir, atomic_path, clean_temp, recover_dir
from engine.core.config import DataConfig, stable_hash
from engine.core.errors import SessrecError, StageError, StorageError
from engine.core.progress import Progress, ProgressFn, null_progress
from engine.core.schema import Split, StageName
from engine.core.workspace import DatasetDir
from engine.data.format_specs import (
    ITEMS_FILE_TEXT,
    require_regular_file,
    source_is_folder,
    spec_file_text,
    srgnn_files,
)
from engine.data.manifest import (
    BuildLock,
    Dataset,
    building_pid,
    file_fingerprint,
    output_problem,
    output_record,
    refuse_if_in_use,
)


@dataclass(frozen=True)
class Stage:
    name: str
    deps: tuple[str, ...]
    params: Callable[[DataConfig], dict]
    run: Callable[["StageContext"], dict]          # writes into ctx.out, returns stats
    description: str
    only_demo: bool = False
    needs_items: bool = False        # only datasets with item files attached (`sessrec data items`)


@dataclass
class StageContext:
    ds: Dataset
    cfg: DataConfig
    out: DatasetDir            # the dataset's paths, with this stage's folder at its temp folder
    progress: ProgressFn

    def input(self, path: Path) -> Path:
        """An upstream artifact (a path of `ds.paths`), which must exist."""
        if not path.exists():
            raise StageError(f"missing input {path}; rebuild stage {path.parent.name!r}")
        return path


# ---- stage bodies ------------------------------------------------------------------------------
def _write_table(table, path: Path) -> None:
    import pyarrow.parquet as pq
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def _events_stats(table) -> dict:
    import numpy as np
    import pyarrow.compute as pc

    from engine.data.sessions import EVENT_TYPES, count_distinct
    key = "session_key" if "session_key" in table.column_names else "visitor"
    ev = np.bincount(table.column("event").to_numpy(), minlength=len(EVENT_TYPES))
    n = table.num_rows
    out = {"events": n, f"{key}s": count_distinct(table.column(key).to_numpy()),
           "items": count_distinct(table.column("item").to_numpy())}
    if n:
        ts = table.column("timestamp")
        out["start"] = pc.min(ts).as_py()
        out["end"] = pc.max(ts).as_py()
    out["event_counts"] = {name: int(c) for name, c in zip(EVENT_TYPES, ev)}
    out["event_shares"] = {name: round(float(c) / max(1, n), 4) for name, c in zip(EVENT_TYPES, ev)}
    return out


def run_ingest(ctx: StageContext) -> dict:
    from engine.data.formats import read_events
    if source_is_folder(ctx.cfg.format):    # srgnn: one folder holds the train and the test file
        from engine.data.srgnn import read_srgnn
        res, tres = read_srgnn(ctx.ds.source_file("path"), ctx.progress)
    else:
        res = read_events(ctx.ds.source_file("path"), ctx.cfg, ctx.progress)
        test_path = ctx.ds.source_file("test_path")
        tres = read_events(test_path, ctx.cfg, ctx.progress) if test_path else None
    chunks = []
    for i, chunk in enumerate(ctx.ds.source.get("chunks") or [], start=1):   # `sessrec data append`
        # a chunk in the dataset's own format is read as its log is (an events log: its columns)
        fmt = ctx.cfg if chunk["format"] == ctx.cfg.format else chunk["format"]
        cres = read_events(ctx.ds.source_file(f"chunk-{i}"), fmt, ctx.progress)
        if cres.key != res.key:
            raise StageError(f"appended chunk {chunk['path']} ({chunk['format']}) keys its events by {cres.key}, "
                             f"the dataset's log by {res.key}: append a log of the same kind")
        chunks.append(cres)
    if chunks:
        import pyarrow as pa
        res = type(res)(pa.concat_tables([res.table, *(c.table for c in chunks)]), res.key, res.stats)
    _write_table(res.table, ctx.out.events)
    stats = {"reader": res.stats, **_events_stats(res.table)}
    if chunks:
        stats["chunks"] = [c.stats for c in chunks]
    if tres is not None:
        _write_table(tres.table, ctx.out.test_events)
        stats["test_file"] = {"reader": tres.stats, **_events_stats(tres.table)}
    return stats


def run_sessionize(ctx: StageContext) -> dict:
    import pyarrow.parquet as pq

    from engine.data.sessionize import sessionize
    events = pq.read_table(ctx.input(ctx.ds.paths.events))
    test_p = ctx.ds.paths.test_events
    test_events = pq.read_table(test_p) if test_p.exists() else None
    sessions, stats = sessionize(events, ctx.cfg, ctx.progress, item_support_from=test_events)
    if test_events is not None:      # the test file's item support counts the train events too
        tsess, tstats = sessionize(test_events, ctx.cfg, ctx.progress, item_support_from=events)
        del test_events
        tsess.write(ctx.out.test_sessions)
        stats["test_file"] = tstats
    del events  # its columns are no longer needed while the sessions are written
    sessions.write(ctx.out.sessions)
    return stats


def run_split(ctx: StageContext) -> dict:
    from engine.data.sessions import Sessions
    from engine.data.split import split_sessions
    sessions = Sessions.read(ctx.input(ctx.ds.paths.sessions))
    test_p = ctx.ds.paths.test_sessions
    test = Sessions.read(test_p) if ctx.cfg.split_mode == "test_file" and test_p.exists() else None
    if ctx.cfg.split_mode == "test_file" and test is None:
        raise StageError("split_mode is test_file but the dataset has no test file (--test-file)")
    parts, stats = split_sessions(sessions, ctx.cfg, test)
    for name, part in parts.items():
        part.write(ctx.out.split_sessions(name))
    return stats


def run_items(ctx: StageContext) -> dict:
    from engine.data.items import encode_splits
    from engine.data.sessions import Sessions
    archive_items(ctx.ds.paths)
    parts = {n: Sessions.read(ctx.input(ctx.ds.paths.split_sessions(n))) for n in Split}
    index, encoded, stats = encode_splits(parts)
    index.write(ctx.out.items)
    for name, s in encoded.items():
        s.write(ctx.out.encoded_sessions(name))
    stats["fingerprint"] = index.fingerprint()
    return stats


def archive_items(paths: DatasetDir) -> None:
    """Keep the item index about to be replaced (under its fingerprint): runs trained on it stay
    servable and can be evaluated on the new splits (`engine.data.artifacts.load_dataset`)."""
    from engine.data.items import ItemIndex
    if not paths.items.exists():
        return
    try:
        fp = ItemIndex.read(paths.items).fingerprint()
    except Exception:                # an unreadable old index is not worth keeping
        return
    target = paths.item_archive(fp)
    if not target.exists():
        with atomic_path(target, "archived item index") as tmp:
            shutil.copyfile(paths.items, tmp)


def run_graph(ctx: StageContext) -> dict:
    from engine.data.graph import build_cooc_graph
    from engine.data.items import ItemIndex
    from engine.data.sessions import Sessions
    index = ItemIndex.read(ctx.input(ctx.ds.paths.items))
    train = Sessions.read(ctx.input(ctx.ds.paths.encoded_sessions("train")))
    graph, stats = build_cooc_graph(train, index.n_items, window=ctx.cfg.cooc_window,
                                    with_event_pairs=ctx.cfg.has_event_types,
                                    progress=ctx.progress)
    graph.save(ctx.out.graph)
    return stats


def run_encodings(ctx: StageContext) -> dict:
    import numpy as np

    from engine.data.encodings import laplacian_pe
    from engine.data.graph import CoocGraph
    graph = CoocGraph.load(ctx.input(ctx.ds.paths.graph))
    pe, stats = laplacian_pe(graph, k=ctx.cfg.pe_dim, progress=ctx.progress)
    with atomic_path(ctx.out.pe) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, pe.astype(np.float32))
    return stats


def run_oracle(ctx: StageContext) -> dict:
    from engine.data.demo.oracle import count_learner, oracle_report
    from engine.data.demo.truth import DemoTruth
    from engine.data.sessions import Sessions
    # the generator writes its truth beside the log it generated
    truth = ctx.ds.source_file("path").with_name(ctx.ds.paths.demo_truth.name)
    if not truth.exists():
        raise StageError(f"demo truth file {truth} is missing; regenerate with `sessrec demo`")
    import numpy as np
    test = Sessions.read(ctx.input(ctx.ds.paths.split_sessions("test")))
    train = Sessions.read(ctx.input(ctx.ds.paths.split_sessions("train")))
    known = np.unique(train.items)
    # every protocol at k = 10 and 20, and for the targets seen in training (the ceiling of a
    # model, which cannot rank an unseen item): one ranking pass
    out = oracle_report(truth, test, ks=(10, 20), known_items=known)
    # the same law with successors and popularity counted in train: what the sample allows
    learner = oracle_report(count_learner(DemoTruth.load(truth), train), test, ks=(10, 20), known_items=known)
    out.update({f"count_learner_{key}": v for key, v in learner.items()})
    with atomic_path(ctx.out.oracle) as tmp:
        tmp.write_text(json.dumps(out, indent=2))
    return {"recall@10_last": out["last@10"]["recall"], "recall@10_prefixes": out["prefixes@10"]["recall"],
            "recall@20_last": out["last@20"]["recall"], "recall@20_prefixes": out["prefixes@20"]["recall"],
            "count_learner_known_recall@10_last": learner["known_last@10"]["recall"],
            "count_learner_known_recall@10_prefixes": learner["known_prefixes@10"]["recall"],
            "detail": out}


def _ingest_params(c: DataConfig) -> dict:
    # a preset's key is its format alone (as before the events format existed: built datasets stay fresh)
    if c.format != "events":
        return {"format": c.format}
    return {"format": c.format, "columns": c.log_columns(), "event_map": c.event_types(),
            "time_format": str(c.time_format)}


def run_metadata(ctx: StageContext) -> dict:
    import pyarrow.parquet as pq

    from engine.data.item_meta import coverage, meta_stats, read_item_sources
    files = ctx.ds.item_files()
    for f in files:
        if not f.exists():
            raise StageError(f"item file {f} does not exist (dataset {ctx.ds.name!r}); restore it or attach "
                             f"the files again (sessrec data items {ctx.ds.name} PATH ...)")
    meta, read = read_item_sources(files, ctx.ds.item_columns)
    meta.write(ctx.out.item_meta, ctx.out.item_categories)
    items = pq.read_table(ctx.input(ctx.ds.paths.events), columns=["item"]).column("item").to_numpy()
    stats = {**meta_stats(meta), **coverage(meta, items), "reader": read}
    test = ctx.ds.paths.test_events
    if test.exists():
        stats["test_file"] = coverage(meta, pq.read_table(test, columns=["item"]).column("item").to_numpy())
    return stats


STAGES: tuple[Stage, ...] = (
    Stage(StageName.INGEST, (), _ingest_params, run_ingest, "read the raw log into a canonical events table"),
    Stage(StageName.SESSIONIZE, ("ingest",),
          lambda c: {"gap_min": c.session_gap_minutes, "min_len": c.min_session_length,
                     "max_len": c.max_session_length, "min_item_support": c.min_item_support},
          run_sessionize, "cut visitor streams into sessions"),
    Stage(StageName.SPLIT, ("sessionize",),
          lambda c: {"mode": c.split_mode, "train": c.train_ratio, "val": c.val_ratio,
                     "blackout_days": c.blackout_days, "test_days": c.test_days,
                     **({"refit": True} if c.refit else {})},   # absent when off: existing keys hold
          run_split, "temporal train/val/test split with blackout"),
    Stage(StageName.ITEMS, ("split",), lambda c: {}, run_items, "item index from the train vocabulary"),
    Stage(StageName.GRAPH, ("items",), lambda c: {"window": c.cooc_window}, run_graph,
          "item co-occurrence graph from train sessions"),
    Stage(StageName.ENCODINGS, ("graph",), lambda c: {"k": c.pe_dim}, run_encodings,
          "Laplacian positional encodings"),
    Stage(StageName.METADATA, ("ingest",), lambda c: {}, run_metadata,
          "item metadata (names, category paths, prices, availability) and its coverage", needs_items=True),
    Stage(StageName.ORACLE, ("split",), lambda c: {"k": [10, 20], "known_targets": True, "count_learner": True}, run_oracle,
          "generator's oracle Recall@K on the test split (demo only)", only_demo=True),
)
STAGE_NAMES = tuple(str(s.name) for s in STAGES)     # plain strings: argparse prints choices with repr()
_BY_NAME = {s.name: s for s in STAGES}
CODE_VERSION = 1   # bump when a stage's output format or semantics change


def stages_for(ds: Dataset) -> list[Stage]:
    return [s for s in STAGES if (ds.is_demo or not s.only_demo) and (ds.has_items or not s.needs_items)]


ITEM_ROLE = "items."      # fingerprint roles of the attached item files: items.0, items.1, ...


def _source_fingerprints(ds: Dataset, cached: dict | None) -> dict:
    """Content fingerprints of the raw files by role ("path", "test_path"; an srgnn folder's files as
    "train" and "test"), reusing `cached` ones whose size and mtime are unchanged."""
    cached = cached or {}
    fps = {}
    if source_is_folder(ds.config.format):
        folder = ds.source_file("path")
        # lexists: a symbolic link loop or a broken link is named by srgnn_files, not "does not exist"
        if folder is None or not os.path.lexists(folder):
            raise StageError(f"source folder {folder} does not exist (dataset {ds.name!r}); "
                             f"restore it or re-import the dataset")
        for role, path in srgnn_files(folder).items():
            fps[role] = file_fingerprint(path, cached.get(role))
        return fps
    chunk_roles = [f"chunk-{i}" for i in range(1, len(ds.source.get("chunks") or []) + 1)]
    for role in ("path", "test_path", *chunk_roles):
        path = ds.source_file(role)
        if path is not None:
            if not os.path.lexists(path):
                raise StageError(f"source file {path} does not exist (dataset {ds.name!r}); "
                                 f"restore it or re-import the dataset")
            # before fingerprinting: reading a FIFO would hang `data status`
            require_regular_file(path, spec_file_text(ds.config.format))
            fps[role] = file_fingerprint(path, cached.get(role))
    return {**fps, **_item_fingerprints(ds, cached)}


def _item_fingerprints(ds: Dataset, cached: dict) -> dict:
    fps = {}
    for i, path in enumerate(ds.item_files()):
        if not os.path.lexists(path):
            raise StageError(f"item file {path} does not exist (dataset {ds.name!r}); restore it or attach "
                             f"the files again (sessrec data items {ds.name} PATH ...)")
        require_regular_file(path, ITEMS_FILE_TEXT)
        fps[f"{ITEM_ROLE}{i}"] = file_fingerprint(path, cached.get(f"{ITEM_ROLE}{i}"))
    return fps


def _inputs_of(stage: str, fingerprints: dict) -> dict:
    """The fingerprints a stage's key covers: the log's for ingest, the item files' for metadata."""
    if stage == StageName.INGEST:
        return {r: fp for r, fp in fingerprints.items() if not r.startswith(ITEM_ROLE)}
    if stage == StageName.METADATA:
        return {r: fp for r, fp in fingerprints.items() if r.startswith(ITEM_ROLE)}
    return {}


def _cached_fingerprints(ds: Dataset) -> dict:
    return {**((ds.stage_record("ingest") or {}).get("inputs") or {}),
            **((ds.stage_record("metadata") or {}).get("inputs") or {})}


def expected_keys(ds: Dataset, fingerprints: dict) -> dict[str, str]:
    """The key each stage would have if built now from the current source and config."""
    cfg = ds.config
    keys: dict[str, str] = {}
    for st in stages_for(ds):
        basis: dict[str, Any] = {"stage": st.name, "code": CODE_VERSION, "params": st.params(cfg),
                                 "deps": [keys[d] for d in st.deps]}
        if st.name in (StageName.INGEST, StageName.METADATA):
            basis["inputs"] = {r: fp["blake2b"] for r, fp in _inputs_of(st.name, fingerprints).items()}
        if st.name == StageName.METADATA:
            basis["columns"] = ds.item_columns
        if st.name == "oracle":
            basis["truth"] = ds.source.get("demo")
        keys[st.name] = stable_hash(basis)
    return keys


@dataclass
class StageStatus:
    name: str
    state: str          # missing | stale | building | done | failed
    stats: dict
    seconds: float | None
    finished_at: str | None
    error: str | None = None


def outputs_problem(ds: Dataset, stage: str, rec: dict) -> str | None:
    """Why a stage's recorded outputs no longer match the files on disk (None if they all do)."""
    d = ds.stage_dir(stage)
    for name, out in rec.get("outputs", {}).items():
        problem = output_problem(d / name, out if isinstance(out, dict) else {}, f"{stage}/{name}")
        if problem:
            return problem
    return None


def status(ds: Dataset) -> list[StageStatus]:
    """Each stage's state, comparing recorded keys with what the current source/config imply."""
    try:
        keys = expected_keys(ds, _source_fingerprints(ds, _cached_fingerprints(ds)))
        source_error = None
    except SessrecError as e:
        keys, source_error = {}, str(e)
    builder = building_pid(ds)
    current = (ds.data.get("building") or {}).get("stage") if builder else None
    out = []
    for st in stages_for(ds):
        rec = ds.stage_record(st.name)
        changed = None
        if current == st.name:
            state = "building"
        elif rec is None:
            state = "missing"
        elif rec.get("status") == "failed":
            state = "failed"
        elif (changed := outputs_problem(ds, st.name, rec)) or keys.get(st.name) != rec.get("key"):
            state = "stale"
        else:
            state = "done"
        error = (rec or {}).get("error") or changed or (source_error if st.name in ("ingest", "metadata") else None)
        out.append(StageStatus(st.name, state, (rec or {}).get("stats", {}),
                               (rec or {}).get("seconds"), (rec or {}).get("finished_at"), error))
    return out


@dataclass
class StageResult:
    name: str
    ran: bool           # False: cached
    seconds: float
    stats: dict


def _release_memory() -> None:
    """Hand what a stage freed back to the OS before the next one starts: arrow's allocator keeps
    freed blocks for reuse, which on the xl demo left 2 GB resident from ingest under sessionize."""
    import gc
    import sys
    gc.collect()
    if "pyarrow" in sys.modules:
        sys.modules["pyarrow"].default_memory_pool().release_unused()


def build(ds: Dataset, upto: str | None = None, force: bool | str = False,
          progress: ProgressFn | None = None) -> list[StageResult]:
    """Run the pipeline up to (and including) `upto`; skip fresh stages unless forced.

    `force=True` reruns every selected stage; `force="<stage>"` reruns that stage (and, since its
    outputs are rewritten, everything downstream that depends on it is rerun as its inputs changed).
    """
    progress = progress or null_progress
    stages = stages_for(ds)
    names = [s.name for s in stages]
    if upto is not None:
        if upto not in _BY_NAME:
            raise StageError(f"unknown stage {upto!r}; stages: {', '.join(STAGE_NAMES)}")
        if upto not in names:
            raise StageError(f"stage {upto!r} does not apply to dataset {ds.name!r}")
        # the stage and everything it depends on, in pipeline order
        need = {upto}
        for st in reversed(stages):
            if st.name in need:
                need.update(st.deps)
        stages = [s for s in stages if s.name in need]
    results: list[StageResult] = []
    with BuildLock(ds):
        # what a killed build left: finish or undo its folder swaps, then drop its temp files
        # (safe now: the lock keeps any other build out)
        for name in STAGE_NAMES:
            recover_dir(ds.stage_dir(name))
        for folder in (ds.dir, *(ds.stage_dir(name) for name in STAGE_NAMES)):
            clean_temp(folder)
        fps = _source_fingerprints(ds, _cached_fingerprints(ds))
        keys = expected_keys(ds, fps)
        rerun: set[str] = set()
        total = len(stages)
        for i, st in enumerate(stages):
            rec = ds.stage_record(st.name)
            forced = force is True or force == st.name or any(d in rerun for d in st.deps)
            fresh = rec is not None and rec.get("status") == "done" and rec.get("key") == keys[st.name]
            changed = outputs_problem(ds, st.name, rec) if fresh else None
            if fresh and not changed and not forced:
                progress(Progress("pipeline", i + 1, total, "stages", f"{st.name}: up to date"))
                results.append(StageResult(st.name, False, 0.0, rec.get("stats", {})))
                continue
            if not rerun:               # the first stage that changes anything
                # a live training reads these artifacts (and its evaluation checks the item index):
                # refused as `data delete` is, under the build lock, before anything is rewritten
                refuse_if_in_use(ds.ws, ds.name, f"rebuild stage {st.name}")
            progress(Progress("pipeline", i, total, "stages",
                              f"{st.name}: running" + (f" ({changed})" if changed else "")))
            ds.data["building"] = {"stage": st.name}
            ds.save()
            t0 = time.perf_counter()
            try:
                with atomic_dir(ds.stage_dir(st.name), f"{st.name} stage folder") as tmp:
                    ctx = StageContext(ds, ds.config, ds.paths.staging(st.name, tmp), progress)
                    try:
                        stats = st.run(ctx)
                    except StorageError as e:   # the writer knows its file; name the stage too
                        raise StorageError(f"{st.name} stage output", e.path, e.error) from e
                    outputs = {p.name: output_record(p) for p in sorted(tmp.iterdir())}
            except BaseException as e:
                ds.data.pop("building", None)
                failed = dict(rec or {})
                failed.update({"stage": st.name, "status": "failed", "key": keys[st.name],
                               "error": f"{type(e).__name__}: {e}" if not isinstance(e, KeyboardInterrupt)
                               else "interrupted",
                               "failed_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
                try:
                    if isinstance(e, KeyboardInterrupt) and rec is not None:
                        ds.save()          # interrupted: keep the previous record as it was
                    else:
                        failed.setdefault("outputs", {})
                        if not isinstance(e, (SessrecError, KeyboardInterrupt)):   # a bug: keep where
                            failed["traceback"] = traceback.format_exc(limit=8)
                        ds.record(st.name, failed)
                except StorageError:
                    pass    # the disk that refused the stage may refuse the manifest too: say why it failed
                raise
            seconds = time.perf_counter() - t0
            _release_memory()
            ds.data.pop("building", None)
            ds.record(st.name, {
                "stage": st.name, "status": "done", "key": keys[st.name], "params": st.params(ds.config),
                "deps": list(st.deps), "inputs": _inputs_of(st.name, fps),
                "outputs": outputs, "stats": stats, "seconds": round(seconds, 3),
                "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
            rerun.add(st.name)
            progress(Progress("pipeline", i + 1, total, "stages", f"{st.name}: done in {seconds:.1f}s"))
            results.append(StageResult(st.name, True, seconds, stats))
    return results


def summary_stats(ds: Dataset) -> dict:
    """The headline numbers of a built dataset (for tables and the app)."""
    g = lambda s: (ds.stage_record(s) or {}).get("stats", {})  # noqa: E731
    ing, ses, spl, gra, ora = g("ingest"), g("sessionize"), g("split"), g("graph"), g("oracle")
    out: dict[str, Any] = {}
    for k in ("events", "visitors", "session_keys", "items"):
        if k in ing:
            out[f"raw_{k}"] = ing[k]
    for k in ("sessions", "events", "items", "length_mean", "length_median", "length_max", "repeat_rate",
              "event_shares"):
        if k in ses:
            out[k] = ses[k]
    for part in Split:
        if part in spl:
            out[f"{part}_sessions"] = spl[part].get("sessions")
    if spl:
        out["blackout_dropped"] = spl.get("blackout_dropped")
    for k in ("nodes", "edges", "avg_degree", "components"):
        if k in gra:
            out[f"graph_{k}"] = gra[k]
    if ora:
        out["oracle_recall@10_last"] = ora.get("recall@10_last")
        out["oracle_recall@10_prefixes"] = ora.get("recall@10_prefixes")
    meta = g("metadata")
    for k in ("item_coverage", "event_coverage", "categories"):
        if k in meta:
            out[f"metadata_{k}"] = meta[k]
    return out
