"""A/B serving: the documented assignment rule, arms and split, impressions and feedback logged off
the request path, phases on a reweight or an arm's reload, the log files' rotation and torn lines."""

from __future__ import annotations

import hashlib
import re
import json

import pytest
from fastapi.testclient import TestClient

from engine.core.errors import InputError
from engine.serve.app import create_app
from engine.serve.eventlog import EventLog, read_log
from engine.serve.experiment import Arm, arm_index, assign_bucket, cutoffs, parse_arms
from engine.serve.server import ServeOptions, make_arms

ADMIN = "admin-key-0123456789abcdef"
POP, SPOP = "baseline:pop@demo-tiny", "baseline:spop@demo-tiny"


def test_the_assignment_is_the_documented_hash():
    sid, exp = "visitor-42", "ab-test"
    digest = hashlib.blake2b(b"ab-test\x00visitor-42", digest_size=8).digest()
    assert assign_bucket(exp, sid) == int.from_bytes(digest, "big") % 10_000
    assert cutoffs([50, 50]) == [5000, 10000] and cutoffs([1, 3]) == [2500, 10000]
    assert cutoffs([1, 1, 1]) == [3333, 6667, 10000]
    assert [arm_index([5000, 10000], b) for b in (0, 4999, 5000, 9999)] == [0, 0, 1, 1]
    # another experiment reshuffles: of 2,000 ids about half change arm
    moved = sum(assign_bucket("e1", f"s{i}") < 5000 != (assign_bucket("e2", f"s{i}") < 5000) for i in range(2000))
    assert 850 < moved < 1150


def test_arms_and_split_are_checked():
    assert parse_arms(["A=r1", "B=r2"], "70,30") == [Arm("A", "r1", 70.0), Arm("B", "r2", 30.0)]
    assert parse_arms(["A=r1", "B=r2"]) == [Arm("A", "r1", 1.0), Arm("B", "r2", 1.0)]
    for arms, split, said in ((["A"], None, "expected NAME=RUN"), (["A=r", "A=s"], None, "given twice"),
                              (["A=r", "B=s"], "50", "1 weight(s) for 2 arm(s)"),
                              (["A=r", "B=s"], "a,b", "expected 2 numbers"),
                              (["A=r", "B=s"], "0,0", "positive sum"), (["A b=r"], None, "arm name")):
        with pytest.raises(InputError, match=re.escape(said)):
            parse_arms(arms, split)


@pytest.fixture
def arms(tiny_demo_ws):
    a = make_arms(tiny_demo_ws, ServeOptions(target="", arms=(f"A={POP}", f"B={SPOP}"), search="exact",
                                             experiment="t-ab"))
    yield a
    a.close()


def client_for(arms, admin: str | None = ADMIN) -> TestClient:
    from engine.serve.app import ServeSettings
    return TestClient(create_app(arms.slots["A"], ServeSettings(admin_key=admin), arms=arms))


def test_each_session_keeps_its_arm_and_every_list_is_logged(arms):
    c = client_for(arms)
    ids = arms.slots["A"].current.rec.items.raw_ids[:5].tolist()
    r = c.post("/recommend", json={"session_items": ids[:2], "k": 3})
    assert r.status_code == 422 and r.json()["error"].startswith("body.session_id: required")
    got = {}
    for rep in range(2):
        for i in range(100):
            body = c.post("/recommend", json={"session_items": ids[:2], "k": 3, "session_id": f"s{i}"}).json()
            expected = "A" if assign_bucket("t-ab", f"s{i}") < 5000 else "B"
            assert body["arm"] == expected and body["model"] == {"A": "pop", "B": "spop"}[expected]
            got.setdefault(f"s{i}", set()).add(body["arm"])
    assert all(len(v) == 1 for v in got.values())              # sticky
    b = c.post("/recommend/batch", json={"sessions": [ids[:1], ids[:2]], "k": 2, "session_ids": ["s1", "s2"]})
    assert [x["arm"] for x in b.json()["results"]] == [next(iter(got["s1"])), next(iter(got["s2"]))]
    assert c.post("/recommend/batch", json={"sessions": [ids[:1]], "k": 2}).status_code == 422
    assert c.post("/recommend/batch", json={"sessions": [ids[:1]], "session_ids": ["a", "b"]}).status_code == 422
    fb = c.post("/feedback", json={"session_id": "s1", "item": ids[0], "event": "click"})
    assert fb.status_code == 202 and fb.json() == {"accepted": True, "arm": next(iter(got["s1"])), "phase": 1}
    assert c.post("/feedback", json={"session_id": "s1", "item": ids[0], "event": "like"}).status_code == 422
    arms.close()
    imp, skipped = read_log(arms.experiment.folder, "impressions")
    fbs, _ = read_log(arms.experiment.folder, "feedback")
    assert len(imp) == 202 and skipped == 0 and len(fbs) == 1
    first = imp[0]
    assert (first["session"], first["arm"], first["phase"], first["k"], first["n"]) == (
        "s0", "A" if assign_bucket("t-ab", "s0") < 5000 else "B", 1, 3, 2)
    assert len(first["items"]) == 3 and fbs[0]["event"] == "click" and fbs[0]["item"] == ids[0]


def test_a_reweight_or_a_swapped_arm_starts_a_new_phase(arms, tiny_demo_ws):
    c = client_for(arms)
    assert c.post("/admin/arms", json={"split": [1, 3]}).status_code == 401      # the admin key
    r = c.post("/admin/arms", json={"split": [1, 3]}, headers={"X-API-Key": ADMIN})
    assert r.status_code == 200 and r.json()["phase"] == 2
    assert [a["share"] for a in r.json()["experiment"]["arms"]] == [0.25, 0.75]
    assert c.post("/admin/arms", json={"split": [1]}, headers={"X-API-Key": ADMIN}).status_code == 422
    assert c.post("/admin/reload", json={"target": POP}, headers={"X-API-Key": ADMIN}).status_code == 422
    r = c.post("/admin/reload", json={"target": POP, "arm": "B"}, headers={"X-API-Key": ADMIN})
    assert r.status_code == 202
    arms.slots["B"]._loading.acquire()           # the reload thread has finished
    arms.slots["B"]._loading.release()
    h = c.get("/health").json()["experiment"]
    assert h["phase"] == 3 and [a["target"] for a in h["arms"]] == [POP, POP] and h["arms"][1]["model"] == "pop"
    state = json.loads(arms.experiment.folder.state.read_text())
    assert [(p["phase"], p["why"]) for p in state["phases"]] == [(1, "start"), (2, "split"), (3, f"arm B -> {POP}")]
    arms.close()
    # the same arms again continue the last phase; other arms start the next one
    again = make_arms(tiny_demo_ws, ServeOptions(target="", arms=(f"A={POP}", f"B={POP}"), split="1,3",
                                                 search="exact", experiment="t-ab"))
    assert again.experiment.phase == 3
    again.close()
    other = make_arms(tiny_demo_ws, ServeOptions(target="", arms=(f"A={POP}", f"B={SPOP}"), search="exact",
                                                 experiment="t-ab"))
    assert other.experiment.phase == 4
    other.close()


def test_a_plain_server_takes_no_feedback(tiny_demo_ws):
    from engine.serve.server import make_slot
    c = TestClient(create_app(make_slot(tiny_demo_ws, ServeOptions(target=POP, search="exact"))))
    r = c.post("/feedback", json={"session_id": "s", "item": 1, "event": "click"})
    assert r.status_code == 409 and "no A/B experiment" in r.json()["error"]
    ids = [1, 2]
    assert c.post("/recommend", json={"session_items": ids, "session_id": "x"}).json()["arm"] is None


def test_logs_rotate_and_a_torn_line_is_skipped(tmp_path):
    from engine.core.workspace import Workspace
    folder = Workspace.open(tmp_path).experiment("rot")
    log = EventLog(folder, "impressions", rotate_bytes=200)
    for i in range(50):
        log.put({"i": i, "pad": "x" * 20})
    log.close()
    files = folder.logs("impressions")
    assert len(files) > 1 and log.written == 50 and log.lost == 0
    with open(files[-1], "ab") as f:
        f.write(b'{"i": 99, "pa')                   # a write cut short
    log2 = EventLog(folder, "impressions", rotate_bytes=10_000)
    log2.put({"i": 50})
    log2.close()
    recs, skipped = read_log(folder, "impressions")
    assert [r["i"] for r in recs] == list(range(51)) and skipped == 1
