"""Prediction examples: which (session, prefix) pairs a model is trained and evaluated on.

An example is a pair (session index, prefix length): the first `prefix length` items of the session
are the input, item number `prefix length` is the target. Pairs are made with np.repeat/arange;
prefixes are never materialised. Training, the evaluator and the demo oracle all enumerate examples
here, so "last" and "prefixes" mean the same thing everywhere. numpy only: the data pipeline (which
runs the demo oracle) must not import torch.
"""

from __future__ import annotations

import numpy as np

from engine.data.sessions import Sessions


def make_examples(sessions: Sessions, protocol: str = "prefixes", drop_unknown_targets: bool = False,
                  max_per_session: int | None = None) -> np.ndarray:
    """int64 [N, 2] (session index, prefix length) pairs, by session then prefix length.

    protocol "prefixes": every next item (prefix lengths 1..n-1); "last": one per session of length
    >= 2 (prefix length n-1). `max_per_session=1` with "prefixes" is the same as "last" (the
    reference's one example per session). `drop_unknown_targets`: drop examples whose target is the
    unknown item 0 (sessions of item indices).
    """
    lengths = sessions.lengths
    if protocol == "last" or max_per_session == 1:
        keep = lengths >= 2
        sid = np.flatnonzero(keep)
        ex = np.stack([sid, lengths[sid] - 1], axis=1)
    elif protocol == "prefixes":
        n_pref = np.maximum(lengths - 1, 0)
        if max_per_session is not None:
            n_pref = np.minimum(n_pref, max_per_session)
        sid = np.repeat(np.arange(len(lengths)), n_pref)
        starts = np.cumsum(n_pref) - n_pref
        # rank of each example inside its session, counted back from the last prefix
        rank = np.arange(len(sid)) - np.repeat(starts, n_pref)
        ex = np.stack([sid, lengths[sid] - 1 - rank], axis=1)
        ex = ex[np.lexsort((ex[:, 1], ex[:, 0]))]
    else:
        raise ValueError(f"unknown protocol {protocol!r}; expected 'last' or 'prefixes'")
    ex = ex.astype(np.int64)
    if drop_unknown_targets and len(ex):
        ex = ex[sessions.items[sessions.offsets[ex[:, 0]] + ex[:, 1]] != 0]
    return ex
