"""`sessrec quickstart`: the main job without the app: demo data, pipeline, a baseline and a GNN,
their test metrics and a recommendation."""

from __future__ import annotations

import argparse

from engine.cli.data_cmds import make_demo
from engine.cli.flags import field_type
from engine.cli.output import Output
from engine.cli.recommend_cmds import show_recommendations
from engine.cli.run_cmds import print_final
from engine.cli.train_cmds import model_name
from engine.core.config import TrainConfig
from engine.core.schema import Device, values
from engine.core.workspace import Workspace


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("quickstart", help="demo end to end: generate, build, train, compare, recommend")
    p.add_argument("--size", default="small")
    p.add_argument("--model", default="graph_transformer", type=model_name, metavar="MODEL")
    p.add_argument("--epochs", type=field_type(TrainConfig, "epochs"), default=None)
    p.add_argument("--device", default=Device.AUTO.value, choices=values(Device))
    p.set_defaults(func=cmd_quickstart)


# ---- quickstart ----------------------------------------------------------------------------------
def cmd_quickstart(args: argparse.Namespace, ws: Workspace, out: Output) -> int:
    """The main job without the app: demo data -> pipeline -> baseline + GNN -> recommendations."""
    from engine.data.artifacts import load_dataset
    from engine.train.loop import StopFlag, fit
    name = make_demo(ws, out, args.size)
    stop = StopFlag()
    stop.install()
    log = out.log_stderr
    finals = []
    for model in ("sknn", args.model):
        cfg = TrainConfig(dataset=name, model=model, device=args.device,
                          **({"epochs": args.epochs} if args.epochs else {}))
        with out:
            finals.append(fit(cfg, ws, log=log, stop=stop, progress=out.progress))
        if stop.requested:
            return 130
    for f in finals:
        print_final(f, out)
    run_id = finals[-1]["run_id"]
    data = load_dataset(ws, name, stages=("items",))
    sample = data.test.take([0])
    raw = data.items.decode(sample.items[:-1][sample.items[:-1] > 0]).tolist()
    out.log(f"recommendations for a test session {raw} (its next item was "
            f"{int(data.items.decode(sample.items[-1:])[0])}):")
    show_recommendations(ws, out, run_id, raw)
    return 0
