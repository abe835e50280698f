"""Batched recommendation, excluding the session's items, and IVF search against exact search."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import InputError
from engine.item_search import IVFSearch, default_nlist
from engine.recommend import Recommender
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


def test_ivf_scanning_every_list_is_exact_search(run):
    rec = Recommender.load(run)
    exact = Recommender.load(run)
    rec.use_search("ivf")
    info = rec.search.info
    assert info.nlist == default_nlist(rec.items.n_items) and info.agreement >= 0.99 and info.sessions > 0
    rec.search.set_nprobe(info.nlist)          # every list scanned: the candidates hold the true top-k
    assert rec.agreement(k=10) == 1.0
    prefixes = [p for p in rec._calibration_prefixes(50) if p]
    raw = [rec.items.decode(np.array(p)).tolist() for p in prefixes]
    for a, b in zip(rec.recommend_many(raw, 10, True), exact.recommend_many(raw, 10, True)):
        assert sorted(a.items) == sorted(b.items) and np.allclose(sorted(a.scores), sorted(b.scores), atol=1e-5)


def test_calibration_takes_the_smallest_nprobe_that_reaches_the_target(run):
    """A one-epoch tiny model's item vectors are barely clustered: scanning 1 of 5 lists agrees
    with exact search on almost no prefix, all 5 on every one; a target of one half lands between."""
    rec = Recommender.load(run)
    rec.use_search("ivf", target=0.5)
    info = rec.search.info
    prefixes = rec._calibration_prefixes(1000)
    assert 1 < info.nprobe < info.nlist == 5 and info.sessions == len(prefixes)
    assert rec.agreement(10, prefixes=prefixes) == pytest.approx(info.agreement) and info.agreement >= 0.5
    rec.search.set_nprobe(info.nprobe // 2)
    assert rec.agreement(10, prefixes=prefixes) < 0.5


def test_the_index_is_cached_for_its_checkpoint(run, tmp_path, monkeypatch):
    rec = Recommender.load(run)
    cache = tmp_path / "ivf.faiss"
    rec.use_search("ivf", cache=cache, signature="ckpt-1")
    assert cache.exists() and cache.with_suffix(".json").exists()
    saved = rec.search.info

    def no_build(*a, **k):
        raise AssertionError("rebuilt")
    monkeypatch.setattr(IVFSearch, "build", no_build)
    rec.use_search("ivf", cache=cache, signature="ckpt-1")
    assert rec.search.info == saved
    with pytest.raises(AssertionError, match="rebuilt"):     # another checkpoint: a new index
        rec.use_search("ivf", cache=cache, signature="ckpt-2")
    # an index cached before the lists were quantised (no codec recorded) is rebuilt, not trusted
    meta = json.loads(cache.with_suffix(".json").read_text())
    assert meta["codec"] == "sq8" and type(IVFSearch.load(cache, "ckpt-1").index).__name__ == "IndexIVFScalarQuantizer"
    del meta["codec"]
    cache.with_suffix(".json").write_text(json.dumps(meta))
    with pytest.raises(AssertionError, match="rebuilt"):
        rec.use_search("ivf", cache=cache, signature="ckpt-1")


def test_search_choices(run, tiny_demo_ws):
    rec = Recommender.load(run, search="auto")                # a small catalogue: exact
    assert rec.search is None and rec.meta["search"] == {"kind": "exact"}
    base = Recommender.for_baseline(tiny_demo_ws, "demo-tiny", "sknn")
    with pytest.raises(InputError, match="needs a GNN"):
        base.use_search("ivf")
    with pytest.raises(InputError, match="expected one of"):
        rec.use_search("hnsw")
    r = base.recommend(base.items.raw_ids[:2].tolist(), k=5, exclude_session_items=True)
    assert not set(r.items) & set(base.items.raw_ids[:2].tolist()) and len(r.items) == 5


def test_recommend_command_takes_the_search_and_exclusion_flags(run, tiny_demo_ws, capsys):
    from engine.cli import main as cli
    ids = Recommender.load(run).items.raw_ids[:2].tolist()
    assert cli(["--workspace", str(tiny_demo_ws.root), "--events", "jsonl", "-q", "recommend", run.run_id,
                *map(str, ids), "--k", "4", "--exclude-session-items", "--search", "ivf"]) == 0
    import json
    res = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")][-1]
    assert len(res["items"]) == 4 and not set(res["items"]) & set(ids) and not any(res["in_session"])
