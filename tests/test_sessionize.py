"""Sessionize: the 30-minute boundary, length filters, truncation, formats with session ids."""

import numpy as np
import pyarrow as pa
import pytest

from engine.core.config import DataConfig
from engine.core.errors import StageError
from engine.data.sessionize import sessionize

MIN = 60_000


def events(rows, key="visitor"):
    k, item, ts, ev = zip(*rows)
    return pa.table({key: pa.array(k, pa.int64()), "item": pa.array(item, pa.int64()),
                     "timestamp": pa.array(ts, pa.int64()), "event": pa.array(ev, pa.int8())})


def as_lists(s):
    return [s.items[a:b].tolist() for a, b in zip(s.offsets[:-1], s.offsets[1:])]


def test_gap_of_exactly_30_minutes_stays_30_01_splits():
    rows = [
        (1, 10, 0, 0), (1, 11, 30 * MIN, 0), (1, 12, 60 * MIN, 0),            # gaps 30:00, 30:00
        (1, 13, 90 * MIN + 1000, 0), (1, 14, 91 * MIN, 0), (1, 15, 92 * MIN, 1),  # gap 30:01
    ]
    s, st = sessionize(events(rows), DataConfig())
    assert as_lists(s) == [[10, 11, 12], [13, 14, 15]]
    assert s.visitor.tolist() == [1, 1]
    assert s.start.tolist() == [0, 90 * MIN + 1000]
    assert s.end.tolist() == [60 * MIN, 92 * MIN]
    assert s.events.tolist() == [0, 0, 0, 0, 0, 1]
    assert st["sessions"] == 2 and st["sessions_before_filter"] == 2


def test_one_millisecond_over_30_minutes_splits():
    rows = [(1, 1, 0, 0), (1, 2, 1, 0), (1, 3, 2, 0), (1, 4, 2 + 30 * MIN + 1, 0),
            (1, 5, 3 + 30 * MIN + 1, 0), (1, 6, 4 + 30 * MIN + 1, 0)]
    s, _ = sessionize(events(rows), DataConfig())
    assert as_lists(s) == [[1, 2, 3], [4, 5, 6]]


def test_rows_out_of_order_are_sorted_and_short_sessions_dropped():
    rows = [(2, 7, 300, 0), (1, 1, 0, 0), (2, 5, 100, 0), (2, 6, 200, 0), (1, 2, 10, 0),
            (3, 9, 50, 0)]
    s, st = sessionize(events(rows), DataConfig())
    assert as_lists(s) == [[5, 6, 7]]
    assert st["dropped_short_sessions"] == 2      # visitor 1 (2 events), visitor 3 (1 event)
    assert st["input_events"] == 6 and st["input_visitors"] == 3


def test_min_and_max_length_configurable_keep_last_events():
    rows = [(1, i, i * 1000, 0) for i in range(1, 7)] + [(2, 20, 0, 0), (2, 21, 1, 0)]
    s, st = sessionize(events(rows), DataConfig(min_session_length=2, max_session_length=4))
    assert sorted(as_lists(s)) == [[3, 4, 5, 6], [20, 21]]
    assert st["truncated_sessions"] == 1
    long = s.take(np.array([i for i in range(len(s)) if s.visitor[i] == 1]))
    assert long.start.tolist() == [3000] and long.timestamps.tolist() == [3000, 4000, 5000, 6000]


def test_gap_configurable():
    rows = [(1, 1, 0, 0), (1, 2, 6 * MIN, 0), (1, 3, 12 * MIN, 0)]
    with pytest.raises(StageError, match="no session has at least 2 events"):
        sessionize(events(rows), DataConfig(session_gap_minutes=5, min_session_length=2))
    s, _ = sessionize(events(rows), DataConfig(session_gap_minutes=6, min_session_length=2))
    assert as_lists(s) == [[1, 2, 3]]


def test_session_ids_are_kept_and_not_cut_by_gaps():
    rows = [(7, 1, 0, 0), (7, 2, 100 * MIN, 0), (7, 3, 50 * MIN, 0), (3, 4, 5, 0), (3, 5, 6, 0),
            (3, 6, 7, 0)]
    s, _ = sessionize(events(rows, key="session_key"), DataConfig(format="rsc15"))
    # sorted by start time: session 7 starts at 0, session 3 at 5; events inside by time
    assert s.session_id.tolist() == [7, 3]
    assert as_lists(s) == [[1, 3, 2], [4, 5, 6]]
    assert (s.visitor == -1).all()


def test_equal_timestamps_keep_file_order():
    rows = [(1, 3, 10, 0), (1, 1, 10, 0), (1, 2, 10, 1)]
    s, _ = sessionize(events(rows), DataConfig())
    assert as_lists(s) == [[3, 1, 2]] and s.events.tolist() == [0, 0, 1]


def test_min_item_support_drops_rare_items_before_length_filter():
    rows = [(1, 1, 0, 0), (1, 2, 1, 0), (1, 9, 2, 0), (1, 1, 3, 0),
            (2, 2, 0, 0), (2, 1, 1, 0), (2, 8, 2, 0)]
    s, st = sessionize(events(rows), DataConfig(min_item_support=2, min_session_length=2))
    # items 9 and 8 occur once: removed; visitor 1 keeps [1, 2, 1], visitor 2 keeps [2, 1]
    assert sorted(as_lists(s)) == [[1, 2, 1], [2, 1]]
    assert st["dropped_rare_item_events"] == 2


def test_stats_repeat_rate_and_lengths():
    rows = [(1, 5, 0, 0), (1, 6, 1, 0), (1, 5, 2, 0),      # last item 5 seen before: repeat
            (2, 1, 0, 0), (2, 2, 1, 0), (2, 3, 2, 0), (2, 4, 3, 0)]
    _, st = sessionize(events(rows), DataConfig())
    assert st["sessions"] == 2 and st["events"] == 7 and st["items"] == 6
    assert st["repeat_rate"] == 0.5
    assert st["length_mean"] == 3.5 and st["length_median"] == 3.5 and st["length_max"] == 4
