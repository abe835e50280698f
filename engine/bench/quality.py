"""Quality benchmark: every model and baseline per dataset and protocol, with their uncertainty.

Each model is trained with `sessrec train` semantics: epochs chosen on validation (early stopping
on val Recall@10), test evaluated once with the best epoch; the run saves its per-example test ranks
(`RunDir.test_ranks`). From them, per dataset and protocol (last, prefixes):

- Recall / MRR / NDCG @10 and @20 with 95% bootstrap intervals over test *sessions* (`engine.evaluation.stats`;
  the same resamples for every model). A GNN runs once per seed (default 0, 1, 2): its point estimate
  is the mean over seeds, ± the seeds' standard deviation, and its interval is that of the
  per-example metric averaged over the seeds. Baselines are deterministic: one run.
- A paired test of the best GNN against the best baseline on the same test examples (both chosen on
  validation Recall@10, never on test): the difference, its paired bootstrap interval and p-values.
- Run time (fit or training plus evaluations; for GNNs also the epochs' training time).
- On the SR-GNN benchmark files, the published numbers in the same table (most papers chose the
  epoch on the test set: optimistic), and on the demo the generator's oracle.

A run with the same complete config on the same item index, finished with its test ranks saved, is
reused instead of trained again (reruns of the benchmark cost only the statistics).

Datasets:
- yoochoose-100k: the published train_full/test files of session-rec (test = the given last day);
  minimum session length 2 as published; validation = latest 10% of the train file, no gap (the
  published train/test boundary has none either). Test items unseen in train are reported.
- diginetica-sample: SR-GNN preprocessing: items seen >= 5 times, sessions of length >= 2, the last
  7 days are test; validation = latest 10% of the rest.
- diginetica / yoochoose1_64: the SR-GNN benchmark files themselves (`srgnn/` in the shared data).
- demo-tiny / demo-small / demo-full: the generator's logs with the default pipeline, next to its oracle.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from engine.bench.measure import machine, save_result
from engine.bench.quality_datasets import DATASETS, PUBLISHED, PUBLISHED_CAVEAT, PUBLISHED_SOURCES
from engine.core.config import DataConfig, TrainConfig
from engine.core.errors import InputError
from engine.core.metrics import per_example_metrics
from engine.core.schema import ModelKind, Protocol, RunStatus
from engine.core.workspace import RunDir, Workspace
from engine.data.manifest import Dataset
from engine.data.refit import refit_dataset
from engine.evaluation.ranks import ExampleRanks
from engine.evaluation.stats import N_BOOT, bootstrap_ci, paired_test
from engine.evaluation.strata import STRATA, STRATUM_METRICS, stratum_values, test_repeat_mask
from engine.models.registry import SPECS, get_spec
from engine.runs.events import RunFinished, read_events

METRICS = ("recall@10", "mrr@10", "ndcg@10", "recall@20", "mrr@20", "ndcg@20")
_DEFAULTS = TrainConfig().to_dict()
SELECT_ON = "recall@10"        # validation metric that picks the best GNN and the best baseline
STRATUM_REFERENCES = (("spop", "repeat"), ("vstan", "new"))   # the baseline each stratum is judged by

# ---- hyperparameters ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParamOverrides:
    """`every_gnn`: KEY=VALUE for every GNN (the old `--param` meaning); `per_model`: MODEL.KEY=VALUE,
    which wins over `every_gnn` (and is the only way to set a baseline's hyperparameters)."""

    every_gnn: Mapping[str, Any]
    per_model: Mapping[str, Mapping[str, Any]]

    def for_model(self, model: str) -> dict[str, Any]:
        base = dict(self.every_gnn) if get_spec(model).kind == ModelKind.GNN else {}
        return {**base, **self.per_model.get(model, {})}


def parse_params(items: list[str], params_file: Path | None = None) -> ParamOverrides:
    """`--param` values (KEY=VALUE or MODEL.KEY=VALUE) over a JSON file {model: {key: value}} (e.g.
    the best trial of a tuning study)."""
    every: dict[str, Any] = {}
    per: dict[str, dict[str, Any]] = {}
    if params_file is not None:
        try:
            data = json.loads(Path(params_file).read_text())
        except (OSError, ValueError) as e:
            raise InputError(f"{params_file}: not a readable JSON file ({e})") from None
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise InputError(f"{params_file}: expected an object {{model: {{parameter: value}}}}")
        for model, values in data.items():
            get_spec(model)
            per[model] = dict(values)
    for kv in items:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise InputError(f"--param {kv!r}: expected KEY=VALUE or MODEL.KEY=VALUE")
        model, dot, name = key.rpartition(".")
        if not dot:
            every[key] = value
        elif model in SPECS:
            per.setdefault(model, {})[name] = value
        else:
            raise InputError(f"--param {kv!r}: unknown model {model!r}; valid models: {', '.join(SPECS)}")
    return ParamOverrides(every, per)


# ---- data -----------------------------------------------------------------------------------------
def prepare(ws: Workspace, name: str, shared: Path, log=print) -> Dataset:
    spec = DATASETS.get(name)
    if spec is None:
        raise InputError(f"unknown benchmark dataset {name!r}; expected one of {', '.join(DATASETS)}")
    bname = f"q-{name}"
    if "demo" in spec:
        from engine.bench.pipeline import ensure_demo
        ds = ensure_demo(ws, spec["demo"], log=log)
    else:
        path = shared / spec["path"]
        if not path.exists():
            raise InputError(f"{path}: real data missing (see ../shared/data/README.md)")
        if spec["format"] == "srgnn":
            cfg = DataConfig(format="srgnn", **_srgnn_defaults(name))
        else:
            cfg = DataConfig(format=spec["format"], **spec["cfg"])
        test = shared / spec["test"] if spec.get("test") else None
        ds = Dataset.create(ws, bname, path, cfg, test_path=test, overwrite=not ws.dataset(bname).exists)
    from engine.data.pipeline import build
    build(ds)
    return Dataset.load(ws, ds.name)


def _srgnn_defaults(name: str) -> dict[str, Any]:
    try:
        from engine.data.srgnn import SRGNN_DATA_DEFAULTS
    except ImportError:
        raise InputError(f"benchmark dataset {name!r} needs the srgnn data format (engine.data.srgnn), "
                         f"which this version of sessrec does not have yet") from None
    return dict(SRGNN_DATA_DEFAULTS)


def item_fingerprint(ws: Workspace, dataset: str) -> str:
    from engine.data.items import ItemIndex
    return ItemIndex.read(ws.dataset(dataset).items).fingerprint()


# ---- runs: train or reuse -------------------------------------------------------------------------
@dataclass
class BenchRun:
    run_id: str
    reused: bool
    final: RunFinished
    train_seconds: float | None          # the epochs' training time (GNNs)
    ranks: dict[str, ExampleRanks]       # protocol -> test ranks
    selection: RunFinished | None = None  # a refit's selection run (its validation chose the epochs)

    @property
    def chosen(self) -> RunFinished:
        """The run whose validation results stand for this one (a refit has no validation)."""
        return self.selection or self.final


def _finished(run: RunDir) -> RunFinished | None:
    """The run's `run_finished` event if it completed (or stopped early)."""
    try:
        events = read_events(run.events)
    except OSError:
        return None
    fin = next((e for e in reversed(events) if isinstance(e, RunFinished)), None)
    ok = (RunStatus.COMPLETED.value, RunStatus.EARLY_STOPPED.value)
    return fin if fin is not None and fin.status in ok else None


def _final_event(run: RunDir) -> RunFinished | None:
    """The run's `run_finished` event if it completed (or stopped early) with test results."""
    fin = _finished(run)
    return fin if fin is not None and fin.test else None


def find_run(ws: Workspace, cfg: TrainConfig, fingerprint: str, protocols) -> str | None:
    """The newest finished run of exactly `cfg` (complete model params) on this item index, with
    the test ranks of every protocol saved; None when there is none."""
    want = cfg.to_dict()
    for rid in reversed(ws.run_ids()):
        run = ws.run(rid)
        try:
            saved = json.loads(run.config.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(saved, dict) or not _same_train(saved, want):
            continue
        if (saved.get("dataset") or {}).get("item_fingerprint") != fingerprint:
            continue
        if all(run.test_ranks(p).exists() for p in protocols) and _final_event(run) is not None:
            return rid
    return None


def _same_train(saved: dict, want: dict) -> bool:
    """The saved run trained `want`: equal configs, where `--loss auto` matches a run whose loss
    was chosen automatically (its config holds the resolved loss and a `loss_choice` record), and
    a field the saved config lacks (written before the field existed) holds its default."""
    train = saved.get("train")
    if not isinstance(train, dict):
        return False
    train = {**{k: v for k, v in _DEFAULTS.items() if k in want}, **train}
    if want.get("loss") == "auto" and saved.get("loss_choice"):
        train = {**train, "loss": "auto"}
    return train == want


def _resolved(cfg: TrainConfig) -> TrainConfig:
    """The hyperparameters completed as `fit` completes them, so that saved configs compare."""
    from engine.core.device import resolve_device
    spec = get_spec(cfg.model)
    return replace(cfg, model_params=spec.resolve(cfg.model_params, resolve_device(cfg.device).type).to_dict())


def find_selection(ws: Workspace, cfg: TrainConfig, fingerprint: str) -> tuple[str, RunFinished] | None:
    """The newest run of exactly `cfg` on this item index that finished with an epoch chosen on
    validation (its test, if it has one, is not used)."""
    want = cfg.to_dict()
    for rid in reversed(ws.run_ids()):
        run = ws.run(rid)
        try:
            saved = json.loads(run.config.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(saved, dict) or not _same_train(saved, want) or \
                (saved.get("dataset") or {}).get("item_fingerprint") != fingerprint:
            continue
        fin = _finished(run)
        if fin is not None and fin.best_epoch and fin.best_val:
            return rid, fin
    return None


def refit_or_reuse(ws: Workspace, cfg: TrainConfig, fingerprint: str, twin: str, twin_fingerprint: str,
                   protocols, stop) -> BenchRun:
    """The papers' protocol for one configuration (`engine.train.refit`): a selection run on the
    dataset (validation only, reused when one exists), then the refit on its twin, tested."""
    from engine.train.loop import fit
    from engine.train.refit import refit_config
    cfg = _resolved(cfg)
    found = find_selection(ws, cfg, fingerprint)
    if found is None:
        fit(cfg, ws, log=lambda m: None, stop=stop, evaluate_test=False)
        found = find_selection(ws, cfg, fingerprint)
        if found is None:
            raise InputError(f"the selection run of {cfg.model} seed {cfg.seed} ended without an epoch chosen "
                             f"on validation (stopped?); run the benchmark again")
    rid, sel = found
    r = train_or_reuse(ws, refit_config(cfg, rid, int(sel.best_epoch), twin), twin_fingerprint, protocols, stop)
    r.selection = sel
    return r


def train_or_reuse(ws: Workspace, cfg: TrainConfig, fingerprint: str, protocols, stop) -> BenchRun:
    from engine.runs import read_run
    from engine.train.loop import fit
    spec = get_spec(cfg.model)
    cfg = _resolved(cfg)
    rid = find_run(ws, cfg, fingerprint, protocols)
    reused = rid is not None
    if rid is None:
        rid = fit(cfg, ws, log=lambda m: None, stop=stop)["run_id"]
    run = ws.run(rid)
    final = _final_event(run)
    if final is None:
        raise InputError(f"run {rid} ended without test results (stopped?); run the benchmark again")
    st = read_run(ws, rid)
    train_s = float(sum(st.epoch_seconds)) if spec.kind == ModelKind.GNN else None
    return BenchRun(rid, reused, final, train_s, {p: ExampleRanks.load(run.test_ranks(p)) for p in protocols})


# ---- statistics ------------------------------------------------------------------------------------
def _spread(values: list[float | None]) -> dict[str, float | None]:
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    return {"mean": _r(v.mean()) if v.size else None, "std": _r(v.std(ddof=1)) if v.size > 1 else None}


def _r(x: float) -> float:
    return round(float(x), 6)


def _check_same_examples(ref: ExampleRanks, other: ExampleRanks, what: str) -> None:
    if not ref.same_examples(other):
        raise InputError(f"{what}: its test examples differ from the other runs' on this dataset "
                         f"(a dataset rebuilt between runs?); delete the old runs or use another workspace")


def summarise(dataset: str, model: str, runs: list[BenchRun], seeds: list[int], protocols,
              n_boot: int, repeats: dict[str, np.ndarray] | None = None
              ) -> tuple[dict[str, Any], dict[str, dict[str, np.ndarray]]]:
    """One table row for a model's runs (one per seed) and, per protocol, its per-example metrics
    averaged over the seeds (what intervals and paired tests resample); `repeats`: per protocol,
    which test targets repeat a session item (the strata)."""
    fin = [r.final for r in runs]
    chosen = [r.chosen for r in runs]
    row: dict[str, Any] = {
        "dataset": dataset, "model": model, "kind": get_spec(model).kind.value, "seeds": seeds,
        "run_ids": [r.run_id for r in runs], "reused": [r.reused for r in runs],
        "status": [f.status for f in fin], "best_epoch": [f.best_epoch for f in chosen],
        "refit_of": [r.selection.run_id if r.selection is not None else None for r in runs],
        f"val_{SELECT_ON}": _spread([(f.best_val or {}).get(SELECT_ON) for f in chosen]),
        "seconds": _spread([f.seconds for f in fin]),
        "train_seconds": _spread([r.train_seconds for r in runs]),
        "test": {},
    }
    values: dict[str, dict[str, np.ndarray]] = {}
    for p in protocols:
        for r in runs[1:]:
            _check_same_examples(runs[0].ranks[p], r.ranks[p], f"run {r.run_id}")
        per_seed = [per_example_metrics(r.ranks[p].ranks) for r in runs]
        avg = {m: np.mean([ps[m] for ps in per_seed], axis=0) for m in METRICS}
        values[p] = avg
        ci = bootstrap_ci(avg, runs[0].ranks[p].session, n_boot=n_boot)
        res = fin[0].test[p]
        metrics = {}
        for m in METRICS:
            seed_means = [float(ps[m].mean()) for ps in per_seed]
            metrics[m] = {"mean": _r(ci[m].mean), "lo": _r(ci[m].lo), "hi": _r(ci[m].hi),
                          "std": _spread(seed_means)["std"], "per_seed": [_r(x) for x in seed_means]}
        known = [((f.test[p] or {}).get("metrics_known_targets") or {}).get(SELECT_ON) for f in fin]
        row["test"][p] = {"n": res.get("n"), "sessions": int(len(np.unique(runs[0].ranks[p].session))),
                          "unseen_targets": res.get("unseen_targets"), "metrics": metrics,
                          **({"strata": stratum_values(avg, repeats[p])} if repeats and p in repeats else {}),
                          # targets seen in training only (what the demo's known-target oracle scores)
                          "known_targets": {SELECT_ON: _spread(known)["mean"]}}
    return row, values


def best_on_validation(rows: list[dict], kind: str) -> dict | None:
    """The row of `kind` with the best validation SELECT_ON (None when there is none)."""
    cands = [r for r in rows if r["kind"] == kind and r[f"val_{SELECT_ON}"]["mean"] is not None]
    return max(cands, key=lambda r: r[f"val_{SELECT_ON}"]["mean"], default=None)


def compare(dataset: str, rows: list[dict], values: dict[str, dict[str, dict[str, np.ndarray]]],
            sessions: dict[str, np.ndarray], protocols, n_boot: int) -> list[dict]:
    """Per protocol: the best GNN against the best baseline (both chosen on validation), paired on
    the same test examples; with the oracle's share on the demo."""
    gnn, base = best_on_validation(rows, ModelKind.GNN), best_on_validation(rows, ModelKind.BASELINE)
    hybrid = next((r for r in rows if r["kind"] == ModelKind.HYBRID.value), None)
    oracle = next((r for r in rows if r["kind"] == "oracle"), None)

    def paired(a: dict, p: str) -> dict:
        tests = paired_test(values[a["model"]][p], values[base["model"]][p], sessions[p], n_boot=n_boot,
                            n_perm=n_boot)
        # differences rounded like the metrics; p-values kept as they are (they can be tiny)
        return {m: {**t.to_dict(), **{k: _r(getattr(t, k)) for k in ("diff", "lo", "hi")}}
                for m, t in tests.items()}
    out = []
    for p in protocols:
        v: dict[str, Any] = {"dataset": dataset, "protocol": p, "chosen_on": f"val {SELECT_ON}",
                             "best_gnn": gnn and gnn["model"], "best_baseline": base and base["model"]}
        if gnn and base:
            v["paired"] = paired(gnn, p)
            v["gnn_beats_baseline"] = {m: t["diff"] > 0 and t["p_value"] < 0.05 for m, t in v["paired"].items()}
        if hybrid and base:
            # reported apart: the hybrid needs the GNN and the baseline at serving time
            v["hybrid"] = f"hybrid ({' + '.join(hybrid['mixes'])})"
            v["hybrid_paired"] = paired(hybrid, p)
        # where the best GNN wins: repeat targets against S-POP, new targets against V-STAN
        for ref, stratum in STRATUM_REFERENCES:
            rr = next((r for r in rows if r["model"] == ref), None)
            gs = (gnn or {}).get("test", {}).get(p, {}).get("strata", {}).get(stratum)
            bs = (rr or {}).get("test", {}).get(p, {}).get("strata", {}).get(stratum)
            if gs and bs:
                v[f"{stratum}_vs_{ref}"] = {m: {"gnn": gs[m], ref: bs[m], "at_least": gs[m] >= bs[m]}
                                            for m in STRATUM_METRICS if gs[m] is not None and bs[m] is not None}
        om = ((oracle or {}).get("test", {}).get(p) or {}).get("metrics", {}).get(SELECT_ON, {}).get("mean")
        if gnn and om:
            g = gnn["test"][p]["metrics"][SELECT_ON]["mean"]
            v[f"oracle_{SELECT_ON}"] = om
            v["gnn_share_of_oracle"] = round(g / om, 4)
            v["within_10pct_of_oracle"] = g >= 0.9 * om
        ok = ((oracle or {}).get("test", {}).get(p) or {}).get("known_targets", {}).get(SELECT_ON)
        gk = gnn["test"][p].get("known_targets", {}).get(SELECT_ON) if gnn else None
        if ok and gk is not None:
            v[f"oracle_known_{SELECT_ON}"] = ok
            v["gnn_share_of_oracle_known"] = round(gk / ok, 4)
            v["at_least_95pct_of_oracle_known"] = gk >= 0.95 * ok
            cl = ((oracle or {}).get("test", {}).get(p) or {}).get("count_learner_known", {}).get(SELECT_ON)
            if cl:
                v[f"count_learner_known_{SELECT_ON}"] = cl
                v["count_learner_share_of_oracle_known"] = round(cl / ok, 4)
        out.append(v)
    return out


def _reference_rows(dataset: str, ds: Dataset, protocols) -> list[dict]:
    """Rows without runs: the demo's oracle, the published numbers on the SR-GNN files."""
    rows = []
    oracle = (ds.stage_record("oracle") or {}).get("stats")
    if oracle:
        detail = oracle.get("detail", {})
        rows.append({"dataset": dataset, "model": "oracle (generator)", "kind": "oracle", "test": {
            p: {"metrics": {m: {"mean": detail.get(f"{p}@{m.split('@')[1]}", {}).get(m.split("@")[0])}
                            for m in METRICS},
                "known_targets": {SELECT_ON: detail.get(f"known_{p}@{SELECT_ON.split('@')[1]}", {})
                                  .get(SELECT_ON.split("@")[0])},
                # the oracle's law with successors and popularity counted in train (what the sample allows)
                "count_learner_known": {SELECT_ON: detail.get(f"count_learner_known_{p}@{SELECT_ON.split('@')[1]}",
                                                              {}).get(SELECT_ON.split("@")[0])}}
                for p in protocols}})
    if Protocol.PREFIXES in protocols:
        for model, (p20, mrr20) in PUBLISHED.get(dataset, {}).items():
            rows.append({"dataset": dataset, "model": f"{model} (published)", "kind": "published",
                         "source": PUBLISHED_SOURCES.get(model), "test": {
                Protocol.PREFIXES.value: {"metrics": {"recall@20": {"mean": p20 / 100},
                                                      "mrr@20": {"mean": mrr20 / 100}}}}})
    return rows


def _hybrid_row(ws: Workspace, name: str, ds: Dataset, rows: list[dict], fp: str, protocols, device: str,
                batch_size: int, n_boot: int, stop, log) -> tuple[dict, dict] | None:
    """The best GNN's run of each seed mixed with the best baseline's run (both chosen on
    validation), the share chosen on validation: one row, kind "hybrid"."""
    gnn, base = best_on_validation(rows, ModelKind.GNN), best_on_validation(rows, ModelKind.BASELINE)
    if gnn is None or base is None:
        return None
    runs = []
    for seed, rid in zip(gnn["seeds"], gnn["run_ids"]):
        cfg = TrainConfig(dataset=ds.name, model="hybrid", device=device, seed=seed, batch_size=batch_size,
                          model_params={"gnn_run": rid, "baseline_run": base["run_ids"][0]})
        log(f"[{name}] hybrid {gnn['model']} ({rid}) + {base['model']} ...")
        runs.append(train_or_reuse(ws, cfg, fp, protocols, stop))
    row, values = summarise(name, "hybrid", runs, gnn["seeds"], protocols, n_boot)
    row["mixes"] = [gnn["model"], base["model"]]       # the row's name stays short: tables fit 80 columns
    return row, values


# ---- the benchmark ---------------------------------------------------------------------------------
def run(ws: Workspace, datasets: list[str], models: list[str], shared: Path, device: str = "auto",
        epochs: int = 30, patience: int = 3, batch_size: int = 512, params: ParamOverrides | None = None,
        seeds: list[int] | None = None, protocols: list[str] | None = None, n_boot: int = N_BOOT,
        log=print, out: Path | None = None, hybrid: bool = True, refit: bool = False,
        loss: str = "auto") -> dict[str, Any]:
    """`refit`: the papers' protocol: every model's epochs (GNNs) chosen by a selection run on the
    validation split, then trained again on train + validation (the dataset's refit twin) and tested
    once; the published numbers sit beside refits. The hybrid, which chooses its weight on
    validation, is left out then."""
    from engine.train.loop import StopFlag
    params = params or ParamOverrides({}, {})
    seeds = list(seeds if seeds is not None else (0, 1, 2))
    protocols = [Protocol(p).value for p in (protocols or list(Protocol))]
    if not seeds:
        raise InputError("--seeds: expected at least one seed")
    for m in models:
        get_spec(m)
    rows, verdicts = [], []
    stop = StopFlag()
    for name in datasets:
        ds = prepare(ws, name, shared, log)
        fp = item_fingerprint(ws, ds.name)
        twin = refit_dataset(ds, progress=None) if refit else None
        twin_fp = item_fingerprint(ws, twin.name) if twin is not None else None
        bs = DATASETS[name].get("batch_size", batch_size)   # small datasets: smaller batches, more steps
        ds_rows, values, sessions, repeats = [], {}, {}, {}
        for model in models:
            spec = get_spec(model)
            model_seeds = seeds if spec.kind == ModelKind.GNN else seeds[:1]   # baselines are deterministic
            runs = []
            for seed in model_seeds:
                cfg = TrainConfig(dataset=ds.name, model=model, epochs=epochs, patience=patience, batch_size=bs,
                                  device=device, seed=seed, loss=loss, model_params=params.for_model(model))
                log(f"[{name}] {model} seed {seed}{' (selection, then refit)' if twin is not None else ''} ...")
                r = (refit_or_reuse(ws, cfg, fp, twin.name, twin_fp, protocols, stop) if twin is not None
                     else train_or_reuse(ws, cfg, fp, protocols, stop))
                log(f"  {'reused' if r.reused else 'trained'} {r.run_id} ({r.final.seconds}s)")
                runs.append(r)
            for p in protocols:
                if p in sessions:
                    _check_same_examples(sessions[p], runs[0].ranks[p], f"run {runs[0].run_id}")
                else:
                    sessions[p] = runs[0].ranks[p]
                    mask = test_repeat_mask(ws, ds.name, runs[0].ranks[p])
                    if mask is not None:
                        repeats[p] = mask
            row, values[model] = summarise(name, model, runs, model_seeds, protocols, n_boot, repeats)
            ds_rows.append(row)
        if hybrid and twin is not None:
            log(f"[{name}] hybrid left out: it chooses its weight on validation, which a refit has none of")
        elif hybrid:
            hyb = _hybrid_row(ws, name, ds, ds_rows, fp, protocols, device, bs, n_boot, stop, log)
            if hyb is not None:
                ds_rows.append(hyb[0])
                values[hyb[0]["model"]] = hyb[1]
        ds_rows += _reference_rows(name, ds, protocols)
        verdicts += compare(name, ds_rows, values, {p: s.session for p, s in sessions.items()}, protocols,
                            n_boot)
        rows += ds_rows
    result = {"benchmark": "quality", "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine(),
              "epochs": epochs, "patience": patience, "batch_size": batch_size, "seeds": seeds,
              "refit": refit, "loss": loss,
              "protocols": protocols, "bootstrap": {"resamples": n_boot, "level": 0.95, "unit": "test session"},
              "params": {"every_gnn": dict(params.every_gnn), "per_model": {k: dict(v) for k, v in
                                                                            params.per_model.items()}},
              "published_caveat": PUBLISHED_CAVEAT, "rows": rows, "verdicts": verdicts}
    result["json_path"] = str(save_result("quality", result, out))
    return result


# ---- the table -------------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _cell(stat: dict | None) -> str:
    """`mean ±std` (std over seeds, when there are several) over `[lo,hi]`, in percent."""
    if not stat or stat.get("mean") is None:
        return "-"
    top = _pct(stat["mean"]) + (f" ±{_pct(stat['std'])}" if stat.get("std") is not None else "")
    return top + (f"\n[{_pct(stat['lo'])},{_pct(stat['hi'])}]" if stat.get("lo") is not None else "")


def _seconds(row: dict) -> str:
    s = row.get("seconds") or {}
    if s.get("mean") is None:
        return "-"
    return f"{s['mean']:.1f}" + (f" ±{s['std']:.1f}" if s.get("std") is not None else "")


def _p(p: float) -> str:
    return f"{p:.2g}"


def _paired_line(v: dict, key: str = "paired", first: str = "best_gnn") -> str:
    if key not in v:
        return ""
    parts = []
    for m in ("recall@20", "mrr@20"):
        t = v[key][m]
        parts.append(f"{m} {100 * t['diff']:+.2f} [{100 * t['lo']:+.2f},{100 * t['hi']:+.2f}] points, p "
                     f"{_p(t['p_value'])} (sign test {_p(t['p_sign'])}, sessions {t['a_better']}:{t['b_better']})")
    return (f"{v[first]} - {v['best_baseline']} (best on {v['chosen_on']}), paired over test sessions: "
            + "; ".join(parts))


def _table_rows(rows: list[dict], protocol: str) -> list[list[Any]]:
    """Two lines per model, @10 and @20 (a cutoff without any value is left out: published rows)."""
    out = []
    for r in rows:
        metrics = r["test"][protocol]["metrics"]
        lines = [(k, [_cell(metrics.get(f"{name}@{k}")) for name in ("recall", "mrr", "ndcg")]) for k in (10, 20)]
        lines = [(k, cells) for k, cells in lines if any(c != "-" for c in cells)]
        for i, (k, cells) in enumerate(lines):
            out.append([r["model"] if i == 0 else "", f"@{k}", *cells, _seconds(r) if i == 0 else ""])
    return out


def _strata_rows(rows: list[dict], protocol: str) -> list[list[Any]]:
    out = []
    for r in rows:
        st = r["test"][protocol].get("strata")
        if not st:
            continue
        cells: list[Any] = [r["model"]]
        for name in STRATA:
            s = st[name]
            cells += [s["n"], *(_pct(s[m]) if s[m] is not None else "-" for m in STRATUM_METRICS)]
        out.append(cells)
    return out


def render(result: dict[str, Any]):
    """One table per dataset and protocol (models as rows, @10 and @20 under each other, so that it
    fits 80 columns), the paired test and the notes below it."""
    from rich.console import Group
    from rich.text import Text

    from engine.core.text import table
    parts: list[Any] = []
    boot = result["bootstrap"]
    for ds in dict.fromkeys(r["dataset"] for r in result["rows"]):
        for p in result["protocols"]:
            rs = [r for r in result["rows"] if r["dataset"] == ds and p in r.get("test", {})]
            if not rs:
                continue
            first = next((r["test"][p] for r in rs if r["test"][p].get("n") is not None), {})
            what = ("refits (epochs chosen on validation, trained on train + validation)" if result.get("refit")
                    else "test with the best epoch on validation")
            parts.append(table(f"{ds}, {p}: {what} (n {first.get('n')}, "
                               f"unseen targets {first.get('unseen_targets')}, counted as misses)",
                               ["model", "K", "Recall %", "MRR %", "NDCG %", "seconds"],
                               _table_rows(rs, p)))
            srows = _strata_rows(rs, p)
            if srows:
                parts.append(table(f"{ds}, {p}: targets that repeat an item of their prefix, and new targets",
                                   ["model", "repeat n", "R@20 %", "MRR@20 %", "new n", "R@20 %", "MRR@20 %"],
                                   srows))
            here = [v for v in result["verdicts"] if v["dataset"] == ds and v["protocol"] == p]
            notes = [_paired_line(v) for v in here] + [_paired_line(v, "hybrid_paired", "hybrid") for v in here]
            notes += [f"{v['best_gnn']}: {100 * v['gnn_share_of_oracle_known']:.1f}% of the oracle's {SELECT_ON} "
                      f"on targets seen in training (oracle {_pct(v[f'oracle_known_{SELECT_ON}'])}%"
                      + (f"; the oracle's law with successors and popularity counted in train: "
                         f"{_pct(v[f'count_learner_known_{SELECT_ON}'])}%, "
                         f"{100 * v['count_learner_share_of_oracle_known']:.1f}% of it"
                         if "count_learner_share_of_oracle_known" in v else "") + ")"
                      for v in here if "gnn_share_of_oracle_known" in v]
            notes.append(f"GNNs: mean ± std over seeds {','.join(map(str, result['seeds']))}; baselines: one "
                         f"run (deterministic); [95% interval: {boot['resamples']} bootstrap resamples of the "
                         f"{first.get('sessions')} test sessions]; seconds: the whole run")
            if any(r["kind"] == "published" for r in rs):
                notes.append(PUBLISHED_CAVEAT)
            parts += [Text(n, style="dim") for n in notes if n]
    if result.get("json_path"):          # absent when a saved result is rendered again
        parts.append(Text(f"json: {result['json_path']}"))
    return Group(*parts)
