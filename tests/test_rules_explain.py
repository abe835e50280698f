"""Business rules at serving time and explanations: the rules' mask (hand-checked), the top-k with
rules over the whole catalogue (exact and PQ search, a GNN and a baseline), the explanations of a
GNN (an exact decomposition of each score), of session-kNN (the voters) and of the popularity
fallback, and the same through `sessrec recommend` and the HTTP API."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.cli import main as cli
from engine.core.errors import InputError
from engine.inference.explain import explanation_text
from engine.inference.recommend import Recommender
from engine.inference.rules import Rules, rule_mask
from engine.train.loop import fit
from tests.conftest import small_cfg


@pytest.fixture(scope="module")
def ws(tiny_demo_ws):
    fit(small_cfg(epochs=1), tiny_demo_ws, run_id="gt")
    return tiny_demo_ws


@pytest.fixture(scope="module")
def rec(ws):
    return Recommender.for_target(ws, "gt")


@pytest.fixture(scope="module")
def session(rec):
    return [int(x) for x in rec.items.raw_ids[[4, 9, 2]]]


# ---- the rules themselves ----------------------------------------------------------------------------
def test_rules_parse_the_one_line_form_and_write_it_back():
    r = Rules.parse("-355908, -12 cat:7 boost:3+1.5 boost:4 available")
    assert r == Rules((12, 355908), True, (7,), (3, 4), 1.5)
    assert Rules.parse(r.text()) == r and Rules.parse("").empty
    with pytest.raises(InputError, match="'cat:x'"):
        Rules.parse("cat:x")
    with pytest.raises(InputError, match="not understood"):
        Rules.parse("sale")
    with pytest.raises(InputError, match="one boost"):
        Rules.parse("boost:3+1 boost:4+2")


def test_the_rule_mask_by_hand():
    """Catalogue: padding, then raw ids 100..103 at indices 1..4; paths 1>2, 1>3, 1>2, none;
    availability 1, 0, unknown, 1."""
    raw = np.array([100, 101, 102, 103])
    encode = lambda ids: np.where(np.isin(ids, raw), np.searchsorted(raw, ids) + 1, 0)   # noqa: E731
    paths = np.array([[-1, -1], [1, 2], [1, 3], [1, 2], [-1, -1]])
    avail = np.array([-1, 1, 0, -1, 1], np.int8)
    m = rule_mask(Rules.of(exclude=[102, 999]), encode, 5, paths, avail)
    assert m.eligible.tolist() == [False, True, True, False, True] and m.n_eligible == 3
    assert rule_mask(Rules.of(only_available=True), encode, 5, paths, avail).eligible.tolist() == \
        [False, True, False, True, True]                                    # unknown availability kept
    assert rule_mask(Rules.of(categories=[2]), encode, 5, paths, avail).eligible.tolist() == \
        [False, True, False, True, False]
    assert rule_mask(Rules.of(categories=[1]), encode, 5, paths, avail).n_eligible == 3   # an ancestor
    b = rule_mask(Rules.of(exclude=[100], boost_categories=[2], boost=2.5), encode, 5, paths, avail)
    assert b.boosted.tolist() == [3] and b.bias.tolist() == [0, 0, 0, 2.5, 0]            # 100 excluded
    with pytest.raises(InputError, match="need item metadata"):
        rule_mask(Rules.of(only_available=True), encode, 5, None, None)


# ---- rules in the top-k ------------------------------------------------------------------------------
@pytest.mark.parametrize("search", ["exact", "pq"])
def test_excluding_the_top_10_returns_the_next_10(rec, session, search):
    rec.use_search(search)
    try:
        top20 = rec.recommend(session, k=20)
        r = rec.recommend(session, k=10, rules=Rules.of(exclude=top20.items[:10]))
        assert r.items == top20.items[10:20]
        assert np.allclose(r.scores, top20.scores[10:20], atol=1e-5)
    finally:
        rec.use_search("exact")


def test_excluding_the_top_10_of_a_baseline_returns_its_next_10(ws, session):
    knn = Recommender.for_target(ws, "baseline:sknn@demo-tiny")
    top20 = knn.recommend(session, k=20)
    assert knn.recommend(session, k=10, rules=Rules.of(exclude=top20.items[:10])).items == top20.items[10:20]


def test_categories_availability_and_boost(rec, session):
    meta = rec.item_meta
    leaf = int(meta.category_of(np.array(rec.recommend(session, k=1).items))[0])
    r = rec.recommend(session, k=5, rules=Rules.of(categories=[leaf]))
    assert len(r.items) == min(5, int((meta.category_of(rec.items.raw_ids) == leaf).sum()))
    assert all(d["category"] == leaf for d in r.info)
    avail = rec.recommend(session, k=rec.items.n_items, rules=Rules.of(only_available=True))
    assert (meta.available_of(np.array(avail.items)) != 0).all()
    assert len(avail.items) == int((meta.available_of(rec.items.raw_ids) != 0).sum())  # every eligible one
    # a boost adds its amount to the boosted items' scores, and only theirs
    plain = rec.recommend(session, k=rec.items.n_items)
    boosted = rec.recommend(session, k=rec.items.n_items, rules=Rules.of(boost_categories=[leaf], boost=3.0))
    before = dict(zip(plain.items, plain.scores))
    in_leaf = set(rec.items.raw_ids[meta.category_of(rec.items.raw_ids) == leaf].tolist())
    for item, score in zip(boosted.items, boosted.scores):
        assert score == pytest.approx(before[item] + (3.0 if item in in_leaf else 0.0), abs=1e-4)


def test_a_rule_that_needs_metadata_is_refused_without_it(ws, session):
    bare = Recommender.for_target(ws, "gt")
    bare.item_meta, bare._paths, bare._available = None, None, None
    with pytest.raises(InputError, match="need item metadata"):
        bare.recommend(session, k=5, rules=Rules.of(categories=[1]))
    assert len(bare.recommend(session, k=5, rules=Rules.of(exclude=[session[0]])).items) == 5


def test_the_popularity_fallback_honours_the_rules(rec):
    pop = rec.recommend([10**15], k=3)
    r = rec.recommend([10**15], k=3, rules=Rules.of(exclude=pop.items[:1]), explain=True)
    assert r.fallback and r.items == rec.recommend([10**15], k=4).items[1:]
    assert r.explanations[0] == {"item": r.items[0], "popularity": r.popularity[0]}
    assert explanation_text(r.explanations[0]).startswith("popular (")


# ---- explanations -----------------------------------------------------------------------------------
def test_a_gnn_explanation_decomposes_each_score_exactly(rec, session):
    r = rec.recommend(session, k=5, explain=True)
    batch = rec.builder.from_prefixes([rec.items.encode(np.array(session)).tolist()])
    top = torch.as_tensor(rec.items.encode(np.array(r.items)), dtype=torch.long)[None, :]
    with torch.inference_mode():
        c = rec.model.contributions(batch, top)
    total = c["cells"].sum(-1) + c["prior"] + c["repeat"]
    assert torch.allclose(total[0], torch.tensor(r.scores), atol=1e-4)       # the parts add up to the score
    for e, score in zip(r.explanations, r.scores):
        cons = e["contributors"]
        assert {x["item"] for x in cons} == set(session)                    # the session's distinct items
        shares = [x["contribution"] for x in cons]
        assert shares == sorted(shares, reverse=True)
        assert all(0 <= x["attention"] <= 1 for x in cons)
        assert sum(abs(x["share"]) for x in cons) == pytest.approx(1.0, abs=1e-3)
    # a recommended session item carries the repeat scorer's logit
    for e, ins in zip(r.explanations, r.in_session):
        assert ("repeat" in e) == (ins and rec.model.repeat)


def test_cooc_counts_are_the_training_graphs(rec, session):
    r = rec.recommend(session, k=3, explain=True)
    enc = rec.items.encode
    for e in r.explanations:
        for c in e["contributors"]:
            want = rec.graph.counts(enc(np.array([e["item"]])), enc(np.array([c["item"]])))[0]
            assert c["cooc"] == int(want)


def test_knn_explanations_name_the_voting_sessions(ws, session):
    knn = Recommender.for_target(ws, "baseline:sknn@demo-tiny")
    r = knn.recommend(session, k=3, explain=True)
    for e, score in zip(r.explanations, r.scores):
        votes = e["neighbours"]
        assert votes and [v["vote"] for v in votes] == sorted((v["vote"] for v in votes), reverse=True)
        # each share is the session's vote over the item's total vote: one total per item
        totals = [v["vote"] / v["share"] for v in votes]
        assert max(totals) == pytest.approx(min(totals), rel=1e-2)  # shares rounded to 4 places
        assert all(0 < v["share"] <= 1 for v in votes)
        assert "contributors" in e and "repeat" not in e


def test_recommend_cli_applies_rules_and_explains(ws, session, capsys):
    top = Recommender.for_target(ws, "gt").recommend(session, k=8)
    argv = ["--workspace", str(ws.root), "--events", "jsonl", "recommend", "gt", *map(str, session), "--k", "5",
            "--exclude", *map(str, top.items[:3]), "--explain"]
    assert cli(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["items"] == top.items[3:8] and res["rules"] == Rules.of(top.items[:3]).text()
    assert len(res["explanations"]) == 5 and {"name", "category", "path"} <= set(res["info"][0])
    assert cli(["--workspace", str(ws.root), "recommend", "gt", *map(str, session), "--k", "3", "--explain"]) == 0
    assert "from " in capsys.readouterr().out


def test_the_api_takes_rules_and_explain(ws):
    from fastapi.testclient import TestClient
    from engine.serve.app import create_app
    from engine.serve.server import ServeOptions, make_slot
    slot = make_slot(ws, ServeOptions(target="gt", search="exact"))
    client = TestClient(create_app(slot))
    rec = slot.current.rec
    s = [int(x) for x in rec.items.raw_ids[[4, 9, 2]]]
    top = rec.recommend(s, k=20)
    body = client.post("/recommend", json={"session_items": s, "k": 10, "exclude": top.items[:10],
                                           "explain": True}).json()
    assert body["items"] == top.items[10:20] and len(body["explanations"]) == 10
    assert body["info"] == rec.describe(top.items[10:20])
    plain = client.post("/recommend", json={"session_items": s, "k": 3}).json()
    assert plain["explanations"] is None and plain["info"] is not None
    batch = client.post("/recommend/batch", json={"sessions": [s, s[:1]], "k": 4, "exclude": top.items[:2]}).json()
    assert batch["results"][0]["items"] == top.items[2:6]
    rec.item_meta, rec._paths, rec._available = None, None, None      # a dataset without metadata
    rec._masks.clear()
    r = client.post("/recommend", json={"session_items": s, "k": 3, "only_available": True})
    assert r.status_code == 422 and "need item metadata" in r.json()["error"]
    bad = client.post("/recommend", json={"session_items": s, "boost": 1e9})
    assert bad.status_code == 422


def test_a_hybrid_explanation_splits_each_item_between_its_parts(ws, session):
    """The hybrid's item gets both parts' evidence (the GNN's contributors, the kNN's voters) and the
    split of its mixed probability: (1 - w) p_gnn / p and w p_knn / p, recomputed here from the parts."""
    fit(small_cfg(model="hybrid", model_params={"gnn_run": "gt", "baseline": "sknn", "weight": 0.3}), ws,
        run_id="hyb")
    hyb = Recommender.for_target(ws, "hyb")
    r = hyb.recommend(session, k=4, explain=True)
    batch = hyb.builder.from_prefixes([hyb.items.encode(np.array(session)).tolist()])
    top = torch.as_tensor(hyb.items.encode(np.array(r.items)), dtype=torch.long)
    with torch.inference_mode():
        g, b = hyb.model.parts(batch)
    pg, pb = 0.7 * g[0, top].double(), 0.3 * b[0, top].double()
    for j, e in enumerate(r.explanations):
        assert e["parts"]["weight"] == pytest.approx(0.3)
        assert e["parts"]["gnn"] == pytest.approx(float(pg[j] / (pg[j] + pb[j])), abs=1e-4)
        assert e["parts"]["baseline"] == pytest.approx(float(pb[j] / (pg[j] + pb[j])), abs=1e-4)
        assert {c["item"] for c in e["contributors"]} <= set(session) and e["contributors"]
        assert "neighbours" in e            # the kNN part's voters (empty when no neighbour voted)
    e = r.explanations[0]
    assert explanation_text(e).endswith(f"gnn {e['parts']['gnn']:.0%} / baseline {e['parts']['baseline']:.0%}")
