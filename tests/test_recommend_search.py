"""Batched recommendation, excluding the session's items, and the PQ search against exact search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.core.errors import InputError
from engine.inference.item_search import MIN_CANDIDATES, PQSearch, sub_quantisers
from engine.inference.recommend import Recommender
from engine.train.loop import fit
from tests.conftest import small_cfg


@pytest.fixture(scope="module")
def run(tiny_demo_ws):
    final = fit(small_cfg(epochs=1), tiny_demo_ws, run_id="search-run")
    return tiny_demo_ws.run(final["run_id"])


@pytest.fixture(scope="module")
def sessions(run):
    rec = Recommender.load(run)
    ids = rec.items.raw_ids
    return [ids[[3, 7, 3]].tolist(), ids[[0]].tolist(), [10**12], ids[[5, 9, 11, 2, 40]].tolist() + [-1]]


def test_a_batch_gives_what_each_session_gives_alone(run, sessions):
    rec = Recommender.load(run)
    many = rec.recommend_many(sessions, k=7)
    for s, r in zip(sessions, many):
        one = rec.recommend(s, k=7)
        assert r.items == one.items and np.allclose(r.scores, one.scores, atol=1e-5)
        assert (r.unknown, r.known, r.fallback) == (one.unknown, one.known, one.fallback)
    assert many[2].fallback and many[2].unknown == [10**12] and many[3].unknown == [-1]


def test_excluding_the_session_items_ranks_the_rest_as_the_full_scores_do(run, sessions):
    rec = Recommender.load(run)
    s = sessions[0]
    r = rec.recommend(s, k=10, exclude_session_items=True)
    assert not any(r.in_session) and len(r.items) == 10 and not set(r.items) & set(s)
    # the same order as the model's own scores with the session's items struck out
    idx = rec.items.encode(np.array(s))
    with torch.no_grad():
        full = rec.model.score(rec.builder.from_prefixes([idx.tolist()]))[0]
    full[idx] = float("-inf")
    expect = rec.items.decode(torch.topk(full, 10).indices.numpy()).tolist()
    assert r.items == expect
    # a repeat item ranks high without exclusion (the repeat scorer): it is dropped, not reordered
    plain = rec.recommend(s, k=10)
    assert [i for i in plain.items if i not in s] == r.items[:len([i for i in plain.items if i not in s])]


def test_rescoring_every_item_is_exact_search(run):
    rec = Recommender.load(run)
    exact = Recommender.load(run)
    rec.use_search("pq")
    info = rec.search.info
    assert (info.m, info.codec) == (sub_quantisers(rec.table.shape[1]), "pq4fs")
    assert info.agreement >= 0.99 and info.sessions > 0 and info.n_items == rec.items.n_items
    rec.search.set_candidates(info.n_items)    # every item a candidate: exact search
    assert rec.agreement(k=10) == 1.0
    prefixes = [p for p in rec._calibration_prefixes(50) if p]
    raw = [rec.items.decode(np.array(p)).tolist() for p in prefixes]
    for a, b in zip(rec.recommend_many(raw, 10, True), exact.recommend_many(raw, 10, True)):
        assert sorted(a.items) == sorted(b.items) and np.allclose(sorted(a.scores), sorted(b.scores), atol=1e-5)


def test_sub_quantisers_take_two_dimensions_each():
    assert [sub_quantisers(d) for d in (256, 64, 6, 7)] == [128, 32, 3, 7]


def test_calibration_doubles_the_count_until_the_target_is_reached():
    table = np.random.default_rng(0).standard_normal((1001, 8)).astype(np.float32)
    s = PQSearch.build(table)
    seen = []

    def agreement():               # a stand-in measure: the share of the catalogue scanned
        seen.append(s.info.candidates)
        return s.info.candidates / 1000
    assert s.calibrate(agreement, 0.2) == 0.256 and seen == [64, 128, 256] and s.info.candidates == 256
    seen.clear()                   # never reached: stops at every item (exact search)
    assert s.calibrate(lambda: seen.append(s.info.candidates) or 0.0, 0.99) == 0.0
    assert seen == [64, 128, 256, 512, 1000] and s.info.candidates == 1000


def test_the_recommender_records_what_it_calibrated_on(run):
    rec = Recommender.load(run)
    rec.use_search("pq", target=1.0)
    info = rec.search.info
    prefixes = rec._calibration_prefixes(1000)
    assert info.sessions == len(prefixes) == 600 and info.k == 10
    assert rec.agreement(10, prefixes=prefixes) == info.agreement == 1.0
    if info.candidates > MIN_CANDIDATES:      # the smallest doubling from 64 that agrees on all
        rec.search.set_candidates(info.candidates // 2)
        assert rec.agreement(10, prefixes=prefixes) < 1.0
        rec.search.set_candidates(info.candidates)
    rec.calibrate_search(target=1.0, k=5, n=100)
    assert (rec.search.info.k, rec.search.info.sessions) == (5, 100)


def test_the_count_scales_with_k_and_leaves_room_for_the_session():
    table = np.random.default_rng(0).standard_normal((1001, 8)).astype(np.float32)
    s = PQSearch.build(table)
    s.set_candidates(128)
    assert s.info.k == 10 and s.candidates_for(10) == 128 and s.candidates_for(20) == 256
    assert s.candidates_for(1) == 13                  # ceil(128 / 10)
    assert s.candidates_for(100, extra=5) == 1000     # capped at the catalogue
    assert s.candidates_for(1, extra=30) == 31
    found = s.search(table[1:3], 1000)
    assert found.shape == (2, 1000) and found.min() >= 1 and sorted(found[0]) == list(range(1, 1001))


def test_the_parts_answer_as_one_index():
    table = np.random.default_rng(1).standard_normal((1001, 8)).astype(np.float32)
    s = PQSearch.build(table)
    assert s.info.parts == 2 and [p.ntotal for p in s.parts] == [500, 500]
    queries = np.random.default_rng(2).standard_normal((5, 8)).astype(np.float32)
    batch = s.search(queries, 40)
    for q, row in zip(queries, batch):                    # alone or in a batch: the same answer
        assert np.array_equal(s.search(q[None], 40)[0], row)
    # the ids run on from part to part: item i is row i of the table
    assert set(batch[0]) <= set(range(1, 1001)) and np.array_equal(s.search(queries, 1000)[0].clip(0) > 0,
                                                                   np.ones(1000, bool))
    one = PQSearch.build(table, parts=1)                  # the same quantiser and codes in one part
    assert one.info.parts == 1
    same = one.search(queries, 40)
    assert np.mean([len(set(a) & set(b)) / 40 for a, b in zip(same, batch)]) > 0.95


def test_the_index_is_cached_for_its_checkpoint(run, tmp_path, monkeypatch):
    rec = Recommender.load(run)
    cache = tmp_path / "pq.npz"
    rec.use_search("pq", cache=cache, signature="ckpt-1")
    assert cache.exists() and cache.with_suffix(".json").exists()
    saved, built = rec.search.info, rec.search
    query = rec.table[[3]].numpy()

    def no_build(*a, **k):
        raise AssertionError("rebuilt")
    monkeypatch.setattr(PQSearch, "build", no_build)
    rec.use_search("pq", cache=cache, signature="ckpt-1")
    assert rec.search.info == saved
    with pytest.raises(AssertionError, match="rebuilt"):     # another checkpoint: a new index
        rec.use_search("pq", cache=cache, signature="ckpt-2")
    # an index of another codec (or unreadable metadata) is rebuilt, not trusted
    meta = json.loads(cache.with_suffix(".json").read_text())
    loaded = PQSearch.load(cache, "ckpt-1")
    assert meta["codec"] == "pq4fs" and [type(p).__name__ for p in loaded.parts] == ["IndexPQFastScan"] * 2
    assert np.array_equal(loaded.search(query, 50), built.search(query, 50))
    cache.with_suffix(".json").write_text(json.dumps({**meta, "codec": "sq8"}))
    with pytest.raises(AssertionError, match="rebuilt"):
        rec.use_search("pq", cache=cache, signature="ckpt-1")
    cache.with_suffix(".json").write_text(json.dumps({**meta, "nprobe": 4}))
    assert PQSearch.load(cache, "ckpt-1") is None
    cache.with_suffix(".json").write_text(json.dumps(meta))   # the codes cut short: rebuilt
    cache.write_bytes(cache.read_bytes()[:1000])
    assert PQSearch.load(cache, "ckpt-1") is None


def test_search_choices(run, tiny_demo_ws):
    rec = Recommender.load(run, search="auto")                # a small catalogue: exact
    assert rec.search is None and rec.meta["search"] == {"kind": "exact"}
    base = Recommender.for_baseline(tiny_demo_ws, "demo-tiny", "sknn")
    with pytest.raises(InputError, match="needs a GNN"):
        base.use_search("pq")
    with pytest.raises(InputError, match="expected one of"):
        rec.use_search("hnsw")
    r = base.recommend(base.items.raw_ids[:2].tolist(), k=5, exclude_session_items=True)
    assert not set(r.items) & set(base.items.raw_ids[:2].tolist()) and len(r.items) == 5


def test_recommend_command_takes_the_search_and_exclusion_flags(run, tiny_demo_ws, capsys):
    from engine.cli import main as cli
    ids = Recommender.load(run).items.raw_ids[:2].tolist()
    assert cli(["--workspace", str(tiny_demo_ws.root), "--events", "jsonl", "-q", "recommend", run.run_id,
                *map(str, ids), "--k", "4", "--exclude-session-items", "--search", "pq"]) == 0
    import json
    res = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")][-1]
    assert len(res["items"]) == 4 and not set(res["items"]) & set(ids) and not any(res["in_session"])
