"""`sessrec recommend TARGET ITEM...`: the top-k next items of a session of raw item ids, from a
run or a baseline fitted on a dataset (`engine.core.target`)."""

from __future__ import annotations

import argparse

from engine.cli.flags import bounded_int
from engine.cli.output import Output
from engine.core.errors import InputError
from engine.core.schema import Device, Runtime, Search, values
from engine.core.text import table
from engine.core.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("recommend", help="top-k next items for a session of raw item ids")
    p.add_argument("run", help="run id, or baseline:NAME@DATASET (e.g. baseline:sknn@demo)")
    p.add_argument("items", nargs="*", help="raw item ids, oldest first")
    p.add_argument("--k", type=bounded_int("k", 1, 100_000), default=10)
    p.add_argument("--device", default=Device.CPU.value, choices=values(Device))
    p.add_argument("--exclude-session-items", action="store_true", help="never recommend an item of the session")
    p.add_argument("--runtime", choices=values(Runtime), default="torch",
                   help="GNN runs: torch (eager), compiled (the encoder compiled by AOTInductor; needs a C++ "
                        "compiler) or onnx (ONNX Runtime); exports are made when missing")
    p.add_argument("--search", choices=values(Search), default="exact",
                   help="top-k over the catalogue: exact, or pq candidates scored exactly (see sessrec serve)")
    p.set_defaults(func=cmd_recommend)


# ---- recommend -----------------------------------------------------------------------------------
def cmd_recommend(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.data.items import parse_item_ids
    show_recommendations(ws, out, args.run, parse_item_ids(" ".join(args.items)), k=args.k, device=args.device,
                         runtime=args.runtime, search=args.search, exclude_session_items=args.exclude_session_items)
    return 0


def show_recommendations(ws: Workspace, out: Output, target: str, ids: list[int], k: int = 10, device: str = "cpu",
                         runtime: str = "torch", search: str = "exact", exclude_session_items: bool = False) -> None:
    """The top-`k` of `target` (a run id or baseline:NAME@DATASET) for the session `ids`, printed."""
    from engine.core.threads import set_compute_threads
    from engine.inference.recommend import Recommender
    set_compute_threads(1)   # one short lookup: thread start-up costs more than it saves
    if k < 1:
        raise InputError("--k must be >= 1")
    rec = Recommender.for_target(ws, target, device=device, runtime=runtime, search=search)
    r = rec.recommend(ids, k=k, exclude_session_items=exclude_session_items)
    rows = [[i + 1, str(item), score, pop, "yes" if ins else ""] for i, (item, score, pop, ins)
            in enumerate(zip(r.items, r.scores, r.popularity, r.in_session))]
    caption = []
    if r.unknown:
        caption.append(f"unknown ids ignored: {', '.join(map(str, r.unknown))}")
    if r.fallback:
        caption.append("no known item: popularity fallback")
    out.result({"items": r.items, "scores": r.scores, "popularity": r.popularity, "in_session": r.in_session,
                "unknown": r.unknown, "fallback": r.fallback, "source": r.source, "ms": round(r.seconds * 1000, 2)},
               table(f"top-{k} from {r.source} ({r.seconds * 1000:.1f} ms)",
                     ["rank", "item", "score", "train count", "in session"], rows,
                     caption="; ".join(caption) or None))
