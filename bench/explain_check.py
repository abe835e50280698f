"""Explanations on the demo's planted structure, and what explaining costs a request.

    .venv/bin/python bench/explain_check.py --workspace W RUN [--sessions 500] [--k 10]

For test prefixes of RUN's demo dataset: every recommended item y that the generator planted as a
successor of the prefix's last item X (truth.npz: X's successor list) is a case; the explanation
passes when it names X among its top-2 contributors. Then the p50 / p90 of `Recommender.recommend`
for one session (k=20, exact search), without and with explain, interleaved request by request so
that both see the same load. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workspace", required=True)
    ap.add_argument("run")
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=400)
    a = ap.parse_args()

    from engine.core.threads import set_compute_threads
    from engine.core.workspace import Workspace
    from engine.data.demo.truth import DemoTruth
    from engine.data.sessions import Sessions
    from engine.inference.recommend import Recommender
    set_compute_threads(1)
    ws = Workspace.open(a.workspace)
    rec = Recommender.for_target(ws, a.run)
    ds = ws.dataset(rec.meta["dataset"])
    truth = DemoTruth.load(ds.demo_truth)
    test = Sessions.read(ds.split_sessions("test"))
    rng = np.random.default_rng(0)
    lengths = np.diff(test.offsets)
    pick = rng.choice(np.flatnonzero(lengths >= 2), size=min(a.sessions, int((lengths >= 2).sum())), replace=False)
    cases = hits = hits1 = 0
    sessions = []
    for s in pick:
        items = test.items[test.offsets[s]:test.offsets[s + 1]]
        cut = int(rng.integers(1, len(items)))              # a prefix of 1 .. n-1 items
        prefix = [int(x) for x in items[:cut]]
        sessions.append(prefix)
        r = rec.recommend(prefix, k=a.k, explain=True)
        if r.fallback:
            continue
        x = prefix[-1]
        xi = int(np.searchsorted(truth.raw_ids, x))
        succ = set(truth.raw_ids[truth.succ_items[truth.succ_offsets[xi]:truth.succ_offsets[xi + 1]]].tolist())
        for y, e in zip(r.items, r.explanations):
            if y not in succ or y == x:
                continue
            cases += 1
            top = [c["item"] for c in e["contributors"][:2]]
            hits += x in top
            hits1 += bool(top) and top[0] == x
    # latency: interleaved plain / explained requests of the same sessions
    plain, explained = [], []
    for i in range(a.repeats):
        s = sessions[i % len(sessions)]
        for flag, out in ((False, plain), (True, explained)):
            t0 = time.perf_counter()
            rec.recommend(s, k=20, explain=flag)
            out.append((time.perf_counter() - t0) * 1000)
    p = lambda v, q: round(float(np.percentile(v, q)), 3)      # noqa: E731
    print(json.dumps({"run": a.run, "model": rec.meta.get("model"), "dataset": rec.meta.get("dataset"),
                      "catalogue": rec.items.n_items, "sessions": len(sessions), "cases": cases,
                      "x_in_top2": round(hits / max(cases, 1), 4), "x_top1": round(hits1 / max(cases, 1), 4),
                      "p50_ms": p(plain, 50), "p50_explain_ms": p(explained, 50),
                      "p90_ms": p(plain, 90), "p90_explain_ms": p(explained, 90),
                      "explain_adds_p50_ms": round(p(explained, 50) - p(plain, 50), 3)}))


if __name__ == "__main__":
    main()
