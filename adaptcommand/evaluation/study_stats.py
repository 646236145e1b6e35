"""Paired, per-persona comparisons of two arms and the study's decision rule.

The unit is the persona (users, not turns, are what the study generalises over). A persona's
score on an arm is the mean over that arm's training seeds. For arm A against arm B on a metric:

- per-persona deltas A - B over the personas both have; the macro delta is their mean;
- its 95% interval is a bootstrap that resamples personas and, per replicate, each arm's seeds
  (one seed draw per arm, shared by all personas: a unified adapter's seed moves every persona at
  once, so its seed-to-seed variance must reach the interval);
- helped / hurt: the shares of personas with delta > 0 / < 0; the exact sign test and the
  Wilcoxon signed-rank test on the deltas (scipy.stats);
- `decide`: the Wilcoxon p-values of a family of comparisons (every model arm against every
  reference, on the primary metric) are Holm-adjusted; a comparison `wins` or `loses` only when
  its adjusted p < alpha and its interval excludes 0 on that side; below `min_personas` personas
  it is `too few personas`; else `no difference`. Beside it, the smallest true mean delta this
  many personas would detect with 80% power given the observed spread of the deltas (normal
  approximation at the family's strictest Holm level, alpha / family size).
"""

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.8


@dataclass
class Comparison:
    """Arm against a reference on one metric: the paired statistics, then the verdict of `decide`."""
    arm: str
    ref: str
    metric: str
    personas: int
    macro_delta: float = None
    ci_low: float = None
    ci_high: float = None
    helped: float = None
    hurt: float = None
    sign_p: float = None
    wilcoxon_p: float = None
    delta_sd: float = None
    holm_p: float = None
    mde: float = None
    verdict: str = None


def bootstrap_ci(scores_a, scores_b, n_boot=2000, seed=0, level=0.95):
    """Percentile interval of the mean persona delta; scores_*: (personas, seeds) arrays (NaN: no run).

    Each replicate draws personas with replacement and, for each arm, its seeds with replacement.
    """
    scores_a, scores_b = np.atleast_2d(scores_a), np.atleast_2d(scores_b)
    n = scores_a.shape[0]
    rng = np.random.default_rng(seed)
    personas = rng.integers(0, n, size=(n_boot, n))

    def replicate_means(scores):
        k = scores.shape[1]
        if k == 1:
            return scores[:, 0][personas]
        seeds = rng.integers(0, k, size=(n_boot, k))
        drawn = scores[personas[:, :, None], seeds[:, None, :]]  # (boot, personas, seeds)
        return np.nanmean(drawn, axis=2)

    with warnings.catch_warnings():  # a replicate may draw only seeds a persona lacks: NaN, left out
        warnings.simplefilter("ignore", RuntimeWarning)
        deltas = replicate_means(scores_a) - replicate_means(scores_b)
        means = np.nanmean(deltas, axis=1)
    alpha = (1 - level) / 2
    return float(np.nanquantile(means, alpha)), float(np.nanquantile(means, 1 - alpha))


def sign_test_p(helped, hurt):
    """Exact two-sided binomial test of helped vs hurt personas (ties dropped)."""
    n = helped + hurt
    return 1.0 if n == 0 else float(stats.binomtest(helped, n, 0.5).pvalue)


def wilcoxon_p(deltas):
    """Two-sided Wilcoxon signed-rank p-value of the deltas (zeros dropped); 1.0 when all are zero."""
    deltas = np.asarray(deltas, dtype=float)
    if not np.any(deltas != 0):
        return 1.0
    return float(stats.wilcoxon(deltas, zero_method="wilcox").pvalue)


def compare(arm, ref, metric, scores_a, scores_b, n_boot=2000, seed=0):
    """Comparison of {persona: {seed: score}} of arm against ref on the personas both have.

    A list of scores per persona stands for seeds 0, 1, ...; seeds are matched by id, so a persona
    that lacks one seed's adapter leaves that seed's column empty instead of shifting the others.
    """
    scores_a, scores_b = _by_seed(scores_a), _by_seed(scores_b)
    common = sorted(p for p in scores_a if p in scores_b
                    and np.isfinite(list(scores_a[p].values())).any() and np.isfinite(list(scores_b[p].values())).any())
    if not common:
        return Comparison(arm, ref, metric, 0)
    a = seed_matrix([scores_a[p] for p in common])
    b = seed_matrix([scores_b[p] for p in common])
    deltas = np.nanmean(a, axis=1) - np.nanmean(b, axis=1)
    low, high = bootstrap_ci(a, b, n_boot, seed)
    helped, hurt = int((deltas > 0).sum()), int((deltas < 0).sum())
    return Comparison(arm, ref, metric, len(common), float(deltas.mean()), low, high, helped / len(common),
                      hurt / len(common), sign_test_p(helped, hurt), wilcoxon_p(deltas),
                      float(deltas.std(ddof=1)) if len(common) > 1 else 0.0)


def _by_seed(scores):
    return {p: dict(v) if isinstance(v, dict) else dict(enumerate(v)) for p, v in scores.items()}


def seed_matrix(rows):
    """(personas, seeds) array from [{seed: score}]: one column per seed id, NaN where a persona lacks it."""
    seeds = sorted({s for r in rows for s in r}, key=lambda s: (s is not None, s if s is not None else 0))
    out = np.full((len(rows), len(seeds)), np.nan)
    for i, r in enumerate(rows):
        for j, s in enumerate(seeds):
            if s in r:
                out[i, j] = r[s]
    return out


def holm(pvalues):
    """Holm-Bonferroni adjusted p-values, in the input order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p, kind="stable")
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def minimum_detectable_effect(sd, n, alpha, power=POWER):
    """Smallest true mean delta a two-sided test at `alpha` detects with `power` at n personas (normal approx.)."""
    if n < 2 or sd is None:
        return None
    return float((stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * sd / np.sqrt(n))


def decide(family, min_personas=10, alpha=ALPHA):
    """Holm-adjust the family's Wilcoxon p-values and give each Comparison its verdict and MDE (in place)."""
    testable = [c for c in family if c.personas > 0]
    for c, p in zip(testable, holm([c.wilcoxon_p for c in testable])):
        c.holm_p = p
        c.mde = minimum_detectable_effect(c.delta_sd, c.personas, alpha / len(testable))
        if c.personas < min_personas:
            c.verdict = "too few personas"
        elif p < alpha and c.ci_low > 0:
            c.verdict = "wins"
        elif p < alpha and c.ci_high < 0:
            c.verdict = "loses"
        else:
            c.verdict = "no difference"
    return family
