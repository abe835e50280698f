"""Example enumeration (engine.data.examples): the one definition of "last" and "prefixes"."""

import numpy as np
import pytest

from engine.data.examples import make_examples
from engine.data.sessions import Sessions


def test_make_examples_by_hand():
    # lengths 3, 1, 2, 4: the single-event session has no next item in either protocol
    s = Sessions.from_lists([[5, 6, 7], [8], [9, 5], [1, 2, 3, 4]], np.int64)
    pref = make_examples(s, "prefixes")
    assert pref.dtype == np.int64
    assert pref.tolist() == [[0, 1], [0, 2], [2, 1], [3, 1], [3, 2], [3, 3]]
    last = make_examples(s, "last")
    assert last.tolist() == [[0, 2], [2, 1], [3, 3]]
    # the targets (item number `prefix length`) are the next items
    targets = s.items[s.offsets[pref[:, 0]] + pref[:, 1]]
    assert targets.tolist() == [6, 7, 5, 2, 3, 4]
    assert s.items[s.offsets[last[:, 0]] + last[:, 1]].tolist() == [7, 5, 4]


def test_make_examples_empty_and_unknown_protocol():
    for protocol in ("last", "prefixes"):
        assert make_examples(Sessions.empty(), protocol).shape == (0, 2)
    with pytest.raises(ValueError, match="protocol"):
        make_examples(Sessions.from_lists([[1, 2]]), "all")
