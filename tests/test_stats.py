"""Bootstrap intervals and paired tests over sessions (engine.evaluation.stats), on cases worked out by hand."""

import math

import numpy as np
import pytest

from engine.core.metrics import per_example_metrics
from engine.evaluation.stats import bootstrap_ci, paired_test, resample_counts, sign_test

INF = math.inf


def test_resampled_counts_draw_every_session_set_of_size_s():
    chunks = list(resample_counts(7, n_boot=50, seed=3))
    w = np.concatenate(chunks)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all()
    again = np.concatenate(list(resample_counts(7, n_boot=50, seed=3)))
    assert (w == again).all()                                  # a fixed seed: the same resamples


def test_ci_of_a_constant_metric_is_a_point():
    ci = bootstrap_ci({"m": np.full(9, 0.25)}, session=np.repeat([4, 7, 9], 3))["m"]
    assert (ci.mean, ci.lo, ci.hi) == (0.25, 0.25, 0.25)


def test_two_sessions_by_hand():
    # session 0: two hits, session 1: one miss. Resamples {0,0} -> 1, {0,1} -> 2/3, {1,1} -> 0 with
    # probabilities 1/4, 1/2, 1/4: the 95% interval runs from 0 to 1, around the mean 2/3
    per = per_example_metrics(np.array([1.0, 4.0, INF]), ks=(10,))
    ci = bootstrap_ci(per, session=np.array([0, 0, 1]))
    assert ci["recall@10"].mean == pytest.approx(2 / 3)
    assert (ci["recall@10"].lo, ci["recall@10"].hi) == (0.0, 1.0)
    assert ci["mrr@10"].mean == pytest.approx((1 + 1 / 4) / 3)


def test_sessions_not_examples_are_resampled():
    # 10 sessions of 10 identical examples, 5 all hits and 5 all misses: a resample's recall is
    # Binomial(10, 1/2) / 10, whose 2.5% and 97.5% quantiles are 0.2 and 0.8 (P(X <= 1) = 11/1024,
    # P(X <= 2) = 56/1024). Resampling the 100 examples would give about [0.4, 0.6].
    ranks = np.repeat(np.where(np.arange(10) < 5, 1.0, INF), 10)
    ci = bootstrap_ci({"r": ranks <= 10}, session=np.repeat(np.arange(10), 10))["r"]
    assert ci.mean == 0.5
    assert ci.lo == pytest.approx(0.2) and ci.hi == pytest.approx(0.8)


def test_identical_systems_differ_by_zero_with_p_one():
    per = per_example_metrics(np.array([1.0, 3.0, INF, 12.0, 2.0]))
    t = paired_test(per, per, session=np.array([0, 0, 1, 2, 2]))
    for r in t.values():
        assert (r.diff, r.lo, r.hi, r.p_value, r.p_sign) == (0.0, 0.0, 0.0, 1.0, 1.0)
        assert (r.sessions, r.a_better, r.b_better) == (3, 0, 0)


def test_a_system_better_on_every_session_has_a_small_p():
    # 20 sessions of 2 examples: A always ranks the target first, B never finds it. Only the two
    # all-same sign flips (probability 2 / 2^20) are as extreme: p = 1 / (1 + 1000) with 1000 draws
    session = np.repeat(np.arange(20), 2)
    a = per_example_metrics(np.ones(40), ks=(20,))
    b = per_example_metrics(np.full(40, INF), ks=(20,))
    t = paired_test(a, b, session)["recall@20"]
    assert (t.diff, t.lo, t.hi) == (1.0, 1.0, 1.0)
    assert t.p_value == pytest.approx(1 / 1001)
    assert t.p_sign == pytest.approx(2 * 0.5 ** 20)
    assert (t.a_better, t.b_better) == (20, 0)
    back = paired_test(b, a, session)["recall@20"]           # the other way round: the sign flips
    assert back.diff == -1.0 and back.p_value == t.p_value and (back.a_better, back.b_better) == (0, 20)


def test_three_sessions_by_hand():
    # A wins each of 3 one-example sessions by 1: |mean| = 1 only when all three signs agree
    # (probability 2/8), so both tests give p = 1/4
    t = paired_test({"r": np.ones(3)}, {"r": np.zeros(3)}, session=np.arange(3))["r"]
    assert t.p_sign == pytest.approx(0.25)
    assert t.p_value == pytest.approx(0.25, abs=0.04)
    # one win and one loss: no difference, every relabelling is as extreme
    t = paired_test({"r": np.array([1.0, 0.0])}, {"r": np.array([0.0, 1.0])}, session=np.arange(2))["r"]
    assert (t.diff, t.p_value, t.p_sign, t.a_better, t.b_better) == (0.0, 1.0, 1.0, 1, 1)


def test_sign_test_by_hand():
    assert sign_test(1, 3) == pytest.approx(2 * 5 / 16)       # P(X <= 1) = (1 + 4) / 16, both tails
    assert sign_test(3, 1) == sign_test(1, 3)
    assert sign_test(2, 2) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(0, 20) == pytest.approx(2 * 0.5 ** 20)
    assert sign_test(5000, 5000) == 1.0 and 0 < sign_test(4800, 5200) < 1e-4   # large n: no overflow


def test_mismatched_inputs_are_refused():
    with pytest.raises(ValueError, match="session"):
        bootstrap_ci({"r": np.ones(3)}, session=np.arange(2))
    with pytest.raises(ValueError, match="same examples"):
        paired_test({"r": np.ones(3)}, {"r": np.ones(4)}, session=np.arange(3))
    with pytest.raises(ValueError, match="no examples"):
        bootstrap_ci({"r": np.ones(0)}, session=np.arange(0))
