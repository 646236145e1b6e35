"""Paired, per-persona comparisons of two arms: the study's decision statistics.

The unit is the persona (users, not turns, are what the study generalises over). For arm A
against arm B on a metric: per-persona deltas A - B over the personas both have; the macro delta
is their mean; its 95% interval is a paired bootstrap that resamples personas; helped/hurt are
the shares of personas with delta > 0 / < 0; the sign test is the exact two-sided binomial test
of helped vs hurt (ties dropped).
"""

import math

import numpy as np


def sign_test_p(helped, hurt):
    """Exact two-sided binomial p-value for `helped` successes in helped + hurt trials at p = 1/2."""
    n = helped + hurt
    if n == 0:
        return 1.0
    k = min(helped, hurt)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def bootstrap_ci(deltas, n_boot=2000, seed=0, level=0.95):
    """Percentile interval of the mean of `deltas` under resampling with replacement."""
    deltas = np.asarray(deltas, dtype=float)
    if len(deltas) == 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = deltas[rng.integers(0, len(deltas), size=(n_boot, len(deltas)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def paired_comparison(scores_a, scores_b, n_boot=2000, seed=0):
    """Compare {persona: score} of arm A against arm B on the personas both define."""
    common = sorted(p for p in scores_a if p in scores_b and scores_a[p] is not None and scores_b[p] is not None)
    deltas = [scores_a[p] - scores_b[p] for p in common]
    if not deltas:
        return {"personas": 0, "macro_delta": None, "ci_low": None, "ci_high": None,
                "helped": None, "hurt": None, "sign_test_p": None}
    low, high = bootstrap_ci(deltas, n_boot, seed)
    helped, hurt = sum(d > 0 for d in deltas), sum(d < 0 for d in deltas)
    return {"personas": len(deltas), "macro_delta": float(np.mean(deltas)), "ci_low": low, "ci_high": high,
            "helped": helped / len(deltas), "hurt": hurt / len(deltas), "sign_test_p": sign_test_p(helped, hurt)}
