"""The app's logic without a UI: run state from events, tails, thinning, forms, datasets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tui import state as S


def _events() -> list[dict]:
    evs = [{"type": "run_started", "run_id": "r", "model": "m", "dataset": "d", "device": "cpu",
            "steps_per_epoch": 4, "epochs": 2, "pid": 0, "n_params": 10, "time": 1.0}]
    step = 0
    for e in (1, 2):
        for k in range(1, 5):
            step += 1
            evs.append({"type": "step", "epoch": e, "step": step, "epoch_step": k, "steps_per_epoch": 4,
                        "loss": 1.0 / step, "examples_per_s": 100.0, "eta_s": 8 - step})
        evs.append({"type": "epoch", "epoch": e, "epoch_seconds": 2.0, "best_epoch": 1, "best_value": 0.3,
                    "improved": e == 1, "val": {"metrics": {"recall@10": 0.3 if e == 1 else 0.25,
                                                            "ndcg@10": 0.2}}})
    evs.append({"type": "run_finished", "status": "completed", "best_epoch": 1,
                "best_val": {"recall@10": 0.3}, "test": {"last": {"metrics": {"recall@10": 0.28}}}})
    return evs


def test_run_state_folds_events() -> None:
    st = S.RunState("r")
    evs = _events()
    for ev in evs[:6]:
        st.feed(ev)
    frac, desc = st.progress()
    assert st.status == "running" and frac == pytest.approx(4 / 8) and "epoch 1/2" in desc
    st.feed_all(evs[6:])
    assert st.status == "completed" and st.finished
    assert st.losses[-1] == pytest.approx(1 / 8) and len(st.steps) == 8
    assert st.epoch_x == [1, 2] and st.val_recall == [0.3, 0.25] and st.best_epoch == 1
    assert st.test["last"]["recall@10"] == 0.28
    assert ("test R@10", "last 0.2800") in st.stats_lines()


def test_run_state_failure_and_fail() -> None:
    st = S.RunState("r").feed_all([
        {"type": "run_started", "steps_per_epoch": 1, "epochs": 1},
        {"type": "run_failed", "error": "CUDA out of memory", "error_kind": "cuda_oom", "suggestion": "smaller"}])
    assert st.status == "failed" and st.error_kind == "cuda_oom" and st.suggestion == "smaller"
    st2 = S.RunState("x").feed_all([{"type": "run_started", "steps_per_epoch": 1, "epochs": 1}])
    st2.fail("killed by SIGKILL")
    assert st2.status == "failed" and "SIGKILL" in st2.error


def test_event_tail_reads_appended_complete_lines(tmp_path: Path) -> None:
    p = tmp_path / "events.jsonl"
    tail = S.EventTail(p)
    assert tail.poll() == []
    p.write_text(json.dumps({"type": "a"}) + "\n" + '{"type": "b"')     # a torn last line
    assert [e["type"] for e in tail.poll()] == ["a"]
    with open(p, "a") as f:
        f.write(', "x": 1}\nnot json\n' + json.dumps({"type": "c"}) + "\n")
    assert [e["type"] for e in tail.poll()] == ["b", "c"]


def test_run_state_from_dir_marks_dead_run_interrupted(tmp_path: Path) -> None:
    d = tmp_path / "r"
    d.mkdir()
    (d / "events.jsonl").write_text(json.dumps({"type": "run_started", "pid": 99_999_999}) + "\n")
    st, _ = S.run_state_from_dir(d)
    assert st.status == "interrupted" and st.error


def test_thin_keeps_bounds_and_last_point() -> None:
    xs = list(range(1000))
    ys = [float(i) for i in xs]
    tx, ty = S.thin(xs, ys, 50)
    assert len(tx) == 50 and tx[-1] == 999 and ty[-1] == 999.0
    assert all(a <= b for a, b in zip(tx, tx[1:]))
    assert S.thin([1, 2], [None, 3.0], 10) == ([2], [3.0])


def test_formatting() -> None:
    assert S.fmt_duration(None) == "-" and S.fmt_duration(3.25) == "3.2s" and S.fmt_duration(75) == "1m15s"
    assert S.fmt_duration(7260) == "2h01m"
    assert S.fmt_num(1234) == "1,234" and S.fmt_num(0.12345) == "0.1235" and S.fmt_num(6.0) == "6"
    assert S.fmt_num(float("nan")) == "-" and S.fmt_num(None) == "-"
    assert S.fmt_bar(0.5, 10) == "[#####.....]"


def test_form_parsing() -> None:
    assert S.parse_int("12", "epochs") == 12
    with pytest.raises(S.FormError, match="not a whole number"):
        S.parse_int("1.5", "epochs")
    with pytest.raises(S.FormError, match=">= 1"):
        S.parse_int("0", "batch size")
    assert S.parse_param("use_pe", "off", True) is False
    assert S.parse_param("dropout", "0.5", 0.1) == 0.5
    with pytest.raises(S.FormError, match="hidden"):
        S.parse_param("hidden", "big", 64)
    defaults = {"hidden": 64, "dropout": 0.1, "readout": "attention"}
    assert S.changed_params({"hidden": "64", "dropout": "0.2", "readout": "mean"}, defaults) == \
        {"dropout": 0.2, "readout": "mean"}
    assert S.effective_defaults({"hidden": 256}, {"hidden": 64}, "auto", has_cuda=False) == {"hidden": 64}
    assert S.effective_defaults({"hidden": 256}, {"hidden": 64}, "auto", has_cuda=True) == {"hidden": 256}
    assert S.new_run_id("m", "d", ["m-s"], stamp="s") == "m-s-2"
    assert S.short_run_id("gat-1127-2100", "gat", "demo") == "1127-2100"
    assert S.short_run_id("20250101-gat-demo-2", "gat", "demo") == "20250101-2"
    assert S.short_run_id("run-a", "gat", "demo") == "run-a"


def test_parse_ids_and_sources() -> None:
    assert S.parse_ids("1, 2 3,,4") == ([1, 2, 3, 4], None)
    ids, err = S.parse_ids("1 abc")
    assert ids == [] and "'abc'" in err
    assert S.parse_source_key(S.source_key("baseline", "sknn", "demo")) == ("baseline", "sknn", "demo")
    assert S.parse_source_key("run:r1") == ("run", "r1", None)


def test_sort_rows_missing_last() -> None:
    rows = [{"v": 0.2}, {"v": None}, {"v": 0.5}]
    assert [r["v"] for r in S.sort_rows(rows, "v", reverse=True)] == [0.5, 0.2, None]
    assert [r["v"] for r in S.sort_rows(rows, "v")] == [0.2, 0.5, None]


def test_dataset_info_and_distributions(tiny_ws: Path) -> None:
    from engine.workspace import Workspace
    ws = Workspace.open(tiny_ws)
    infos = S.dataset_infos(ws)
    assert [i.name for i in infos] == ["demo-tiny"]
    info = infos[0]
    assert info.built and info.state_of("graph") == "done" and info.is_demo
    assert info.source == "datasets/demo-tiny/source/events.csv"
    labels = dict(S.summary_rows(info.summary))
    assert labels["sessions"] == "431"
    d = S.distributions(ws, "demo-tiny")
    assert d.item_counts == sorted(d.item_counts, reverse=True) and sum(d.length_hist.values()) == 431
    xs, ys = S.popularity_curve(d.item_counts, 20)
    assert xs[0] == 1.0 and len(xs) <= 20
    labels, values = S.length_bars(d.length_hist, 8)
    assert labels[-1] == ">8" and sum(values) == 431


def test_broken_manifest_is_reported_not_raised(tiny_ws: Path) -> None:
    from engine.workspace import Workspace
    (tiny_ws / "datasets" / "demo-tiny" / "manifest.json").write_text("{not json")
    info = S.dataset_info(Workspace.open(tiny_ws), "demo-tiny")
    assert info.error and "not valid JSON" in info.error
