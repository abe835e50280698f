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
    g = p.add_argument_group("business rules (applied to the whole catalogue before the top-k)")
    g.add_argument("--exclude", nargs="+", default=[], metavar="ID", help="raw item ids never to recommend")
    g.add_argument("--only-available", action="store_true",
                   help="leave out items whose latest availability is 0 (item metadata)")
    g.add_argument("--category", nargs="+", default=[], metavar="CAT",
                   help="only items in these category ids (anywhere on their category path)")
    g.add_argument("--boost-category", nargs="+", default=[], metavar="CAT",
                   help="lift items in these category ids by --boost")
    g.add_argument("--boost", type=float, default=1.0, help="score added to boosted items (default 1.0)")
    p.add_argument("--explain", action="store_true",
                   help="per item, the session items that contributed most and how (see docs/serving-and-export.md)")
    p.set_defaults(func=cmd_recommend)


# ---- recommend -----------------------------------------------------------------------------------
def cmd_recommend(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    from engine.data.items import parse_item_ids
    from engine.inference.rules import Rules
    rules = Rules.of(parse_item_ids(" ".join(args.exclude)), args.only_available,
                     parse_item_ids(" ".join(args.category)), parse_item_ids(" ".join(args.boost_category)),
                     args.boost)
    show_recommendations(ws, out, args.run, parse_item_ids(" ".join(args.items)), k=args.k, device=args.device,
                         runtime=args.runtime, search=args.search, exclude_session_items=args.exclude_session_items,
                         rules=rules, explain=args.explain)
    return 0


def show_recommendations(ws: Workspace, out: Output, target: str, ids: list[int], k: int = 10, device: str = "cpu",
                         runtime: str = "torch", search: str = "exact", exclude_session_items: bool = False,
                         rules=None, explain: bool = False) -> None:
    """The top-`k` of `target` (a run id or baseline:NAME@DATASET) for the session `ids`, printed;
    `rules` (engine.inference.rules.Rules) restrict and boost the catalogue, `explain` adds reasons."""
    from engine.core.threads import set_compute_threads
    from engine.inference.explain import explanation_text
    from engine.inference.recommend import Recommender
    set_compute_threads(1)   # one short lookup: thread start-up costs more than it saves
    if k < 1:
        raise InputError("--k must be >= 1")
    rec = Recommender.for_target(ws, target, device=device, runtime=runtime, search=search)
    r = rec.recommend(ids, k=k, exclude_session_items=exclude_session_items, rules=rules, explain=explain)
    info = r.info or [{} for _ in r.items]
    rows = [[i + 1, str(item), score, pop, "yes" if ins else ""] for i, (item, score, pop, ins)
            in enumerate(zip(r.items, r.scores, r.popularity, r.in_session))]
    headers = ["rank", "item", "score", "train count", "in session"]
    if r.info is not None:
        headers[2:2] = ["name", "category"]
        for row, d in zip(rows, info):
            row[2:2] = [d.get("name") or "", " > ".join(d.get("path") or [])]
    if explain:
        headers.append("why")
        for row, e in zip(rows, r.explanations or []):
            row.append(explanation_text(e))
    caption = []
    if r.unknown:
        caption.append(f"unknown ids ignored: {', '.join(map(str, r.unknown))}")
    if r.fallback:
        caption.append("no known item: popularity fallback")
    result = {"items": r.items, "scores": r.scores, "popularity": r.popularity, "in_session": r.in_session,
              "unknown": r.unknown, "fallback": r.fallback, "source": r.source, "ms": round(r.seconds * 1000, 2)}
    if r.info is not None:
        result["info"] = r.info
    if explain:
        result["explanations"] = r.explanations
    if rules is not None and not rules.empty:
        result["rules"] = rules.text()
    out.result(result,
               table(f"top-{k} from {r.source} ({r.seconds * 1000:.1f} ms)", headers, rows,
                     caption="; ".join(caption) or None))
