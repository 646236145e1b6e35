"""The decision statistics by hand, and the decision rule calibrated on simulated personas (numpy only)."""

import numpy as np
import pytest
from calibration import false_positive_rate, win_rate

from adaptcommand.evaluation.study_stats import (
    bootstrap_ci,
    compare,
    decide,
    holm,
    minimum_detectable_effect,
    seed_matrix,
    sign_test_p,
    wilcoxon_p,
)


def test_sign_test_hand_values():
    assert sign_test_p(5, 0) == pytest.approx(2 / 32)           # 2 * P(X <= 0), n = 5
    assert sign_test_p(8, 2) == pytest.approx(2 * 56 / 1024)    # 2 * (C(10,0)+C(10,1)+C(10,2)) / 2^10
    assert sign_test_p(3, 3) == 1.0 and sign_test_p(0, 0) == 1.0


def test_wilcoxon_hand_values():
    # 5 positive deltas of distinct sizes: exact two-sided p = 2 / 2^5
    assert wilcoxon_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)
    # ranks 1..4 with signs -,+,+,+: W- = 1; P(W <= 1) = 2 / 16 -> two-sided 0.25
    assert wilcoxon_p([-0.1, 0.2, 0.3, 0.4]) == pytest.approx(0.25)
    assert wilcoxon_p([0.0, 0.0]) == 1.0


def test_holm_hand_values():
    # sorted 0.01, 0.02, 0.04 -> 3*0.01, max(.03, 2*.02), max(.04, 1*.04); back in input order
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])


def test_bootstrap_resamples_personas_and_seeds():
    assert bootstrap_ci([[0.1]] * 3, [[0.0]] * 3) == pytest.approx((0.1, 0.1))
    low, high = bootstrap_ci(np.array([[0.0], [1.0]] * 20), np.zeros((40, 1)), n_boot=4000, seed=1)
    assert low < 0.5 < high and 0.3 < low and high < 0.7
    # every persona gains exactly 0.1 on each seed's average, but the reference's two seeds differ by
    # 0.4 for everyone at once (a unified adapter's seed): the interval must show that spread
    a = np.full((50, 1), 0.6)
    b = np.tile([0.3, 0.7], (50, 1))
    low, high = bootstrap_ci(a, b, n_boot=4000, seed=2)
    assert low == pytest.approx(-0.1) and high == pytest.approx(0.3)


def test_compare_on_common_personas():
    a = {"p1": [0.5], "p2": [0.4], "p3": [0.9], "p4": [np.nan], "p5": [0.3]}
    b = {"p1": [0.3], "p2": [0.4], "p3": [0.5], "p4": [0.2]}
    c = compare("x", "y", "routine_f1", a, b, n_boot=500)
    # common defined personas: p1 (+0.2), p2 (0), p3 (+0.4)
    assert c.personas == 3 and c.macro_delta == pytest.approx(0.2)
    assert c.helped == pytest.approx(2 / 3) and c.hurt == 0.0
    assert c.sign_p == pytest.approx(0.5)
    assert (c.ci_low, c.ci_high) == pytest.approx((0.0, 0.4))  # the extremes of 3 deltas
    # seeds: a persona's score is the mean over its seeds
    c = compare("x", "y", "m", {"p1": [0.2, 0.4]}, {"p1": [0.1]}, n_boot=100)
    assert c.macro_delta == pytest.approx(0.2)


def test_seeds_are_matched_by_id_not_position():
    """p2 lacks seed 0: its seed-1 score must stay in the seed-1 column, not slide into seed 0's."""
    assert np.array_equal(seed_matrix([{0: 0.1, 1: 0.9}, {1: 0.9}]), [[0.1, 0.9], [np.nan, 0.9]], equal_nan=True)
    assert np.array_equal(seed_matrix([{None: 0.3}, {None: 0.5}]), [[0.3], [0.5]])
    # seed 0 scores 0.0 for everyone, seed 1 scores 1.0; half the personas lack seed 0. A replicate that
    # draws seed 0 twice (a quarter of them) must give 0: positional columns would put the missing
    # personas' seed-1 scores under seed 0, and no replicate would go below about 0.3.
    a = {f"p{i}": {0: 0.0, 1: 1.0} if i % 2 else {1: 1.0} for i in range(10)}
    b = {p: [0.0] for p in a}
    c = compare("x", "y", "m", a, b, n_boot=2000)
    assert c.macro_delta == pytest.approx(0.75) and c.ci_low == 0.0 and c.ci_high == 1.0


def test_verdicts():
    strong = [compare("a", "base", "m", {f"p{i}": [0.5 + 0.01 * i] for i in range(20)},
                      {f"p{i}": [0.2] for i in range(20)}, n_boot=500)]
    assert decide(strong)[0].verdict == "wins" and strong[0].holm_p < 0.05
    weak = [compare("a", "base", "m", {f"p{i}": [0.2] for i in range(20)},
                    {f"p{i}": [0.5 + 0.01 * i] for i in range(20)}, n_boot=500)]
    assert decide(weak)[0].verdict == "loses"
    few = [compare("a", "base", "m", {f"p{i}": [0.9] for i in range(5)}, {f"p{i}": [0.1] for i in range(5)})]
    assert decide(few, min_personas=10)[0].verdict == "too few personas"
    assert minimum_detectable_effect(1.0, 100, 0.05) == pytest.approx((1.959964 + 0.841621) / 10, rel=1e-5)


# ------------------------------------------------------------ calibration (simulated personas)
@pytest.mark.parametrize("n", [10, 30, 200])
def test_no_true_difference_is_declared_at_most_5_percent_of_the_time(n):
    trials = 300
    # family-wise over 3 null arms; 5% plus two Monte Carlo standard errors at 300 trials
    assert false_positive_rate(n, trials, seed=n) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / trials)


def test_one_standard_deviation_at_30_personas_wins_80_percent():
    assert win_rate(30, 1.0, trials=200, seed=7) >= 0.8
