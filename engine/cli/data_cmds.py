"""`sessrec demo` and `sessrec data ...`: create, build, inspect and delete datasets."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from rich.markup import escape

from engine.cli.flags import add_config_flags, bounded_float, bounded_int, config_names, field_type, given
from engine.cli.output import Output
from engine.core.config import DataConfig, TrainConfig, to_dict
from engine.core.errors import InputError, StageError
from engine.core.locks import lock_holder
from engine.core.schema import DataFormat, Split, SplitMode, values
from engine.core.text import fmt, table
from engine.core.workspace import Workspace, demo_dataset_name
from engine.data.format_specs import (
    ITEMS_FILE_TEXT,
    SRGNN_DATA_DEFAULTS,
    require_regular_file,
    require_source,
    source_is_folder,
    spec_file_text,
)
from engine.data.manifest import Dataset, refuse_if_in_use
from engine.data.pipeline import STAGE_NAMES, build
from engine.data.report import DatasetReport, dataset_report, dataset_reports

DATA_FLAGS = config_names(DataConfig)


def add_data_flags(p: argparse.ArgumentParser, exclude: tuple[str, ...] = ()) -> None:
    """The pipeline's parameters, one flag per `DataConfig` field (`--min-session-length`, ...)."""
    add_config_flags(p.add_argument_group("pipeline parameters (default: the dataset's current ones)"),
                     DataConfig, exclude=exclude)


def config_from_args(base: DataConfig, args: argparse.Namespace) -> DataConfig:
    changes = given(args, DATA_FLAGS)
    return replace(base, **changes) if changes else base


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="generate the demo dataset (RetailRocket format) and build it")
    p.add_argument("--size", default="small", help="tiny | small | full | xl (default small; xl: 30M events)")
    p.add_argument("--name", help="dataset name (default: demo, or demo-<size>)")
    p.add_argument("--seed", type=field_type(TrainConfig, "seed"), default=0)
    p.add_argument("--no-build", action="store_true", help="only write events.csv")
    p.add_argument("--force", action="store_true", help="regenerate even if the source exists")
    p.add_argument("--new-items", type=bounded_float("new_items", 0, 0.5), default=0.0, metavar="SHARE",
                   help="plant this share of the catalogue as items released at the start of the test "
                        "period, with known categories (cold start; default 0)")
    p.add_argument("--chunks", type=bounded_int("chunks", 1, 100), default=1,
                   help="cut the log into this many time spans: the first is the dataset, the later ones are "
                        "written as source/chunk-2.csv, ... for `sessrec data append` (default 1)")
    add_data_flags(p)
    p.set_defaults(func=cmd_demo)

    data = sub.add_parser("data", help="datasets: import, build, status, fetch, delete")
    dsub = data.add_subparsers(dest="data_cmd", required=True, metavar="COMMAND")

    p = dsub.add_parser("import", help="register a raw log file (an srgnn folder) as a dataset and build it",
                        description="Formats: events (any CSV/TSV, Parquet or JSON Lines log, plain or "
                        "compressed, its columns named: --columns item=product_id,time=ts,user=uid"
                        "[,session=sid][,event=type] [--event-map click=view,cart=addtocart,"
                        "order=transaction] [--time-format auto|s|ms|us|ns|iso]); the presets "
                        "retailrocket, rsc15 and diginetica (fixed columns); srgnn (a folder of pickles).")
    p.add_argument("path", type=Path, help="the raw log file; for --format srgnn the folder holding "
                   "all_train_seq.txt[.gz] and test.txt[.gz], with defaults that keep the published "
                   "data: " + " ".join(f"--{k.replace('_', '-')} {v}"
                                       for k, v in SRGNN_DATA_DEFAULTS.items()))
    p.add_argument("--format", required=True, choices=values(DataFormat))
    p.add_argument("--name", required=True)
    p.add_argument("--test-file", type=Path, help="predefined test period (published split)")
    p.add_argument("--no-build", action="store_true")
    add_data_flags(p)
    p.set_defaults(func=cmd_import)

    p = dsub.add_parser("append", help="add a newer chunk of a dataset's log (same kind of log, any "
                        "supported format) and rebuild what changed")
    p.add_argument("name")
    p.add_argument("path", type=Path, help="the chunk's file (plain or gzip)")
    p.add_argument("--format", choices=[f for f in values(DataFormat) if f != DataFormat.SRGNN], default=None,
                   help="the chunk's format (default: the dataset's)")
    p.add_argument("--no-build", action="store_true")
    p.set_defaults(func=cmd_append)

    p = dsub.add_parser("build", help="run (or refresh) the pipeline stages of a dataset")
    p.add_argument("name")
    p.add_argument("--upto", choices=STAGE_NAMES, help="stop after this stage")
    p.add_argument("--force", nargs="?", const=True, default=False, metavar="STAGE",
                   help="rerun everything, or STAGE and what depends on it")
    add_data_flags(p)
    p.set_defaults(func=cmd_build)

    for st in STAGE_NAMES:
        if st == "items":
            p = dsub.add_parser(st, help="attach item metadata (an item table, or RetailRocket's item_properties "
                                "and category_tree files) and build it; without PATH: run the pipeline up to "
                                "the items stage",
                                description="sessrec data items NAME PATH... [--columns item=COL,name=COL,"
                                "category=COL,price=COL,available=COL]: an item table (CSV/TSV or Parquet) needs "
                                "--columns; RetailRocket's item_properties_part*.csv (timestamp,itemid,property,"
                                "value) and category_tree.csv (categoryid,parentid) are found by their headers. "
                                "The files replace those attached before.")
            p.add_argument("name")         # before the files: `data items NAME PATH...`
            p.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="item files (later files win)")
            # dest item_columns: `columns` is the pipeline's field (the log's columns)
            p.add_argument("--columns", dest="item_columns", help="item table: FIELD=COLUMN,... (item and at "
                           "least one of name, category, price, available)")
            p.add_argument("--no-build", action="store_true", help="only attach the files")
        else:
            p = dsub.add_parser(st, help=f"run the pipeline up to the {st} stage")
            p.add_argument("name")
        p.add_argument("--force", action="store_true", help=f"rerun {st} even if it is up to date")
        add_data_flags(p, exclude=("columns",) if st == "items" else ())
        p.set_defaults(func=cmd_items if st == "items" else cmd_build, upto=st, stage_cmd=st)

    p = dsub.add_parser("status", help="stages, freshness and stats of each dataset")
    p.add_argument("name", nargs="?")
    p.set_defaults(func=cmd_status)

    p = dsub.add_parser("fetch", help="download a public dataset with your own credentials")
    p.add_argument("dataset", choices=["retailrocket"])
    p.add_argument("--dest", type=Path, help="folder for events.csv (default <workspace>/downloads/retailrocket)")
    p.add_argument("--import", dest="do_import", action="store_true",
                   help="then import it as dataset 'retailrocket' and build it")
    p.set_defaults(func=cmd_fetch)

    p = dsub.add_parser("delete", help="delete a dataset's folder (never the user's source file)")
    p.add_argument("name")
    p.add_argument("--yes", action="store_true", help="do not ask")
    p.set_defaults(func=cmd_delete)


# ---- commands --------------------------------------------------------------------------------
def _build(ds: Dataset, out: Output, upto: str | None = None, force: bool | str = False) -> None:
    t0 = time.perf_counter()
    with out:
        results = build(ds, upto=upto, force=force, progress=out.progress)
    for r in results:
        out.emit({"type": "stage", "dataset": ds.name, "stage": r.name, "ran": r.ran,
                  "seconds": round(r.seconds, 3)})
    ran = [r.name for r in results if r.ran]
    out.log(f"dataset {ds.name}: {'built ' + ', '.join(ran) if ran else 'everything up to date'} "
            f"({time.perf_counter() - t0:.1f}s)")
    show_dataset(dataset_report(ds.ws, ds.name), out)


def cmd_demo(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    make_demo(ws, out, args.size, args.name, args.seed, force=args.force, build_it=not args.no_build,
              data=given(args, DATA_FLAGS), new_items=args.new_items, chunks=args.chunks)
    return 0


def make_demo(ws: Workspace, out: Output, size: str = "small", name: str | None = None, seed: int = 0, *,
              force: bool = False, build_it: bool = True, data: dict | None = None,
              new_items: float = 0.0, chunks: int = 1) -> str:
    """Generate the demo log of `size` (again only when asked or when it differs) with its item
    metadata (attached as RetailRocket's property and category-tree files) and build it; `data`:
    DataConfig fields to change; `new_items`: the share of items released in the test period;
    `chunks` > 1: only the first time span is the dataset, the others are written beside it for
    `sessrec data append`. Returns the dataset's name."""
    from engine.data.demo import DEMO_SIZES, generate_demo
    if size not in DEMO_SIZES:
        raise InputError(f"unknown demo size {size!r}; expected one of {', '.join(DEMO_SIZES)}")
    name = demo_dataset_name(size, name)
    paths = ws.dataset(name)
    events = paths.demo_events
    demo = {"size": size, "seed": seed, **({"new_items": new_items} if new_items else {}),
            **({"chunks": chunks} if chunks > 1 else {})}
    existing = None
    if paths.exists:
        existing = Dataset.load(ws, name)
        if existing.source.get("demo") != demo and not force:
            raise InputError(f"dataset {name!r} exists with demo {existing.source.get('demo')}; "
                             f"pass --force to regenerate, or choose another --name")
    if force or not events.exists() or not paths.demo_truth.exists() or \
            not all(p.exists() for p in paths.demo_item_files) or \
            (existing and existing.source.get("demo") != demo):
        if existing is not None:        # its source is rewritten: not under a live training
            refuse_if_in_use(ws, name, "regenerate it")
        out.log(f"generating demo dataset '{name}' ({size}, seed {seed}) ...")
        with out:
            gstats = generate_demo(paths.demo_events, paths.demo_truth, size=size, seed=seed,
                                   progress=out.progress, new_items=new_items,
                                   chunk_paths=tuple(paths.demo_chunk(c) for c in range(2, chunks + 1)))
        if existing is not None:        # a new log: chunks appended to the old one are gone with it
            existing.data["source"].pop("chunks", None)
        out.emit({"type": "demo_generated", "dataset": name, "stats": gstats})
        out.log(f"wrote {events} ({gstats.get('events', 0):,} events)"
                + "".join(f"; {paths.demo_chunk(c)} ({n:,} events)"
                          for c, n in enumerate(gstats.get("chunk_events", [])[1:], start=2)))
    base = existing.config if existing else DataConfig(format="retailrocket")
    cfg = replace(base, **data) if data else base
    ds = Dataset.create(ws, name, events, cfg, demo=demo, overwrite=existing is None)
    if ds.item_files() != list(paths.demo_item_files):
        ds.attach_items(list(paths.demo_item_files), None)
    if build_it:
        _build(ds, out)
    return name


def cmd_append(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    append_chunk(ws, out, args.name, args.path, args.format, build_it=not args.no_build)
    return 0


def append_chunk(ws: Workspace, out: Output, name: str, path: Path, fmt: str | None = None,
                 build_it: bool = True) -> bool:
    """`data append`: record `path` as a newer chunk of dataset `name`'s log and rebuild. Running it
    again with the same file changes nothing (the build finishes what an interrupted one left).
    Returns whether the chunk was new."""
    ds = Dataset.load(ws, name)
    fmt = fmt or str(ds.config.format)
    require_regular_file(path, spec_file_text(fmt))
    refuse_if_in_use(ws, name, "append to it")
    added = ds.append_chunk(path, fmt)
    out.log(f"dataset {name}: {'appended' if added else 'already has'} {path.resolve()} ({fmt})")
    out.emit({"type": "appended", "dataset": name, "path": str(path.resolve()), "new": added})
    if build_it:
        _build(ds, out)
    return added


def cmd_import(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    # refuse a directory, FIFO or device (a folder without its files, for srgnn) before anything is
    # registered (a FIFO would hang the build)
    require_source(args.path, args.format)
    path = args.path.expanduser().resolve()
    test = args.test_file.expanduser().resolve() if args.test_file else None
    folder = source_is_folder(args.format)
    if folder:
        if test is not None:
            raise InputError(f"--test-file: format {args.format} takes no test file; the folder "
                             f"{path} holds its own test.txt")
        base = dict(SRGNN_DATA_DEFAULTS)
    else:
        if test is not None:
            require_regular_file(args.test_file, f"{spec_file_text(args.format)} (test period)")
        base = {"split_mode": SplitMode.TEST_FILE if test else SplitMode.RATIO}
    # one construction, so that the checks see the flags (format events needs its --columns)
    cfg = DataConfig(format=args.format, **{**base, **given(args, DATA_FLAGS)})
    has_test = test is not None or folder
    if test is not None and cfg.split_mode != SplitMode.TEST_FILE:
        raise InputError("--test-file needs --split-mode test_file (the default when a test file is given)")
    if not has_test and cfg.split_mode == SplitMode.TEST_FILE:
        raise InputError("--split-mode test_file needs --test-file PATH")
    if folder and cfg.split_mode != SplitMode.TEST_FILE:
        out.log(f"note: --split-mode {cfg.split_mode} splits the training sessions; the published "
                f"test sessions of {path} are not used")
    with _removed_on_failure(ws, args.name):
        ds = Dataset.create(ws, args.name, path, cfg, test_path=test)
        out.log(f"dataset {args.name}: source {'folder ' if folder else ''}{path}"
                + (f", test file {test}" if test else ""))
        if not args.no_build:
            _build(ds, out)
    return 0


@contextlib.contextmanager
def _removed_on_failure(ws: Workspace, name: str) -> Iterator[None]:
    """Remove the dataset folder if this block created it and then failed, so that a retry with a
    fixed file just works; a dataset that existed before is never removed."""
    folder = ws.dataset(name).root
    existed = folder.exists()
    try:
        yield
    except BaseException:
        if not existed:
            shutil.rmtree(folder, ignore_errors=True)
        raise


def cmd_build(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    ds = Dataset.load(ws, args.name)
    cfg = config_from_args(ds.config, args)
    if cfg != ds.config:
        # before the manifest takes the new parameters: a refused build must leave it as it was
        refuse_if_in_use(ws, args.name, "rebuild it with new parameters")
        ds.data["config"] = to_dict(cfg)
        ds.save()
    force = args.force
    if getattr(args, "stage_cmd", None) and force:
        force = args.stage_cmd
    _build(ds, out, upto=args.upto, force=force)
    return 0


def cmd_items(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    if not args.paths:
        if args.item_columns:
            raise InputError("--columns names an item table's columns: give the table's PATH too")
        return cmd_build(args, ws, out)
    from engine.data.item_meta import item_file_kind, parse_item_columns
    ds = Dataset.load(ws, args.name)
    for path in args.paths:
        require_regular_file(path, ITEMS_FILE_TEXT)
    kinds = [item_file_kind(p) for p in args.paths]
    columns = parse_item_columns(args.item_columns) if args.item_columns else None
    if "table" in kinds and columns is None:
        table = args.paths[kinds.index("table")]
        raise InputError(f"{table}: an item table needs --columns item=COL,... (name, category, price, available); "
                         f"RetailRocket's item_properties and category_tree files are found by their headers")
    if columns is not None and "table" not in kinds:
        raise InputError("--columns is for an item table; the files given are RetailRocket property or "
                         "category-tree files")
    refuse_if_in_use(ws, args.name, "attach item metadata")
    ds.attach_items([p.expanduser().resolve() for p in args.paths], columns)
    out.log(f"dataset {args.name}: item files " + ", ".join(f"{p} ({k})" for p, k in zip(args.paths, kinds)))
    if not args.no_build:
        _build(ds, out)
    return 0


STATE_STYLE = {"done": "green", "stale": "yellow", "missing": "dim", "failed": "red", "building": "cyan"}


def show_dataset(rep: DatasetReport, out: Output) -> None:
    """One dataset's stages and stats; an unreadable dataset is a one-line error."""
    if rep.error:
        raise InputError(rep.error)
    rows = [[s.name, f"[{STATE_STYLE.get(s.state, '')}]{s.state}[/]",
             f"{s.seconds:.2f}s" if s.seconds is not None else "-", escape(s.note)] for s in rep.stages]
    out.result({"dataset": rep.name, "stages": {s.name: {"state": s.state, "seconds": s.seconds,
                                                          "error": s.error} for s in rep.stages},
                "summary": rep.summary, "bad_rows": rep.bad_rows},
               table(f"dataset {escape(rep.name)} ({rep.format}"
                     f"{' folder' if rep.source_kind == 'folder' else ''}: {escape(rep.source)})",
                     ["stage", "state", "time", "stats"], rows))
    if out.mode == "rich":
        for line in rep.bad_rows:   # unwrapped: line numbers must not be split
            out.console.print(line, soft_wrap=True, markup=False, highlight=False)


def cmd_status(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    if args.name:
        show_dataset(dataset_report(ws, args.name), out)
        return 0
    reports = dataset_reports(ws)
    if not reports:
        out.result({"datasets": []}, "no datasets in " + str(ws.datasets_dir) +
                   ": run `sessrec demo` or `sessrec data import PATH --format F --name N`")
        return 0
    rows, objs = [], []
    for rep in reports:
        if rep.error:   # listed with its reason: one broken dataset must not hide the others
            reason = rep.error.removeprefix(f"{ws.dataset(rep.name).manifest}: ")  # the row names it
            rows.append([rep.name, f"[red]unreadable[/]: {escape(reason)}", None, None, None, None, None])
            objs.append({"dataset": rep.name, "error": rep.error})
            continue
        summ = rep.summary
        not_done = [f"{s.name} {s.state}" for s in rep.stages if s.state != "done"]
        states = f"[green]all {len(rep.stages)} done[/]" if not not_done else \
            f"[yellow]{'; '.join(not_done[:2])}{' ...' if len(not_done) > 2 else ''}[/]"
        rows.append([rep.name, states, summ.get("sessions"), summ.get("items"),
                     " / ".join(fmt(summ.get(f"{p}_sessions")) for p in Split),
                     summ.get("graph_edges"), summ.get("repeat_rate")])
        objs.append({"dataset": rep.name, "stages": {s.name: s.state for s in rep.stages}, "summary": summ})
    out.result({"datasets": objs},
               table(f"datasets in {ws.datasets_dir} (`sessrec data status NAME` for every stat)",
                     ["name", "stages", "sessions", "items", "train / val / test", "edges", "repeat"], rows))
    return 0


def cmd_fetch(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.data.fetch import fetch_retailrocket
    dest = args.dest or ws.download_dir(args.dataset)
    path = fetch_retailrocket(dest, progress=out.progress, workspace=ws.root)
    out.log(f"RetailRocket events.csv at {path}")
    out.emit({"type": "fetched", "path": str(path)})
    if args.do_import:
        with _removed_on_failure(ws, "retailrocket"):
            ds = Dataset.create(ws, "retailrocket", path, DataConfig(format="retailrocket"))
            _build(ds, out)
    return 0


def cmd_delete(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    # no Dataset.load: a dataset whose manifest is unreadable must still be deletable
    paths = ws.dataset(args.name)
    if not paths.root.is_dir():
        Dataset.load(ws, args.name)    # raises "not found", with the known names
    pid = lock_holder(paths.build_lock)
    if pid is not None:
        raise StageError(f"dataset {args.name!r} is being built by process {pid or '?'}; stop it first")
    refuse_if_in_use(ws, args.name, "delete it")
    if not args.yes:
        if out.mode == "jsonl":
            raise InputError("delete needs --yes when not interactive")
        answer = input(f"delete {paths.root} (the source file stays)? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            out.log("kept")
            return 1
    shutil.rmtree(paths.root)
    out.log(f"deleted {paths.root}")
    return 0

