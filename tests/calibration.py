"""The decision rule on simulated personas: how often it declares a difference that is not there,
and how often it finds one that is. The calibration tests use these functions; run this file for
the figures design.md reports:

    .venv/bin/python tests/calibration.py
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adaptcommand.evaluation.study_stats import compare, decide  # noqa: E402


def simulated_family(rng, n, effect, arms=3, n_boot=400):
    """Verdicts for `arms` arms against a baseline: per-persona baseline scores, each arm = baseline +
    noise N(0, 1) (+ `effect` on the first arm only)."""
    base = rng.normal(0.5, 1.0, n)
    personas = [f"p{i}" for i in range(n)]
    reference = {p: [s] for p, s in zip(personas, base)}
    family = []
    for k in range(arms):
        scores = base + (effect if k == 0 else 0.0) + rng.normal(0, 1.0, n)
        family.append(compare(f"arm{k}", "baseline", "m", {p: [s] for p, s in zip(personas, scores)}, reference,
                              n_boot=n_boot, seed=int(rng.integers(1 << 30))))
    return decide(family, min_personas=10)


def false_positive_rate(n, trials, seed=0):
    """Share of trials with no true difference in which any of 3 arms is declared a win or a loss."""
    rng = np.random.default_rng(seed)
    return float(np.mean([any(c.verdict in ("wins", "loses") for c in simulated_family(rng, n, 0.0))
                          for _ in range(trials)]))


def win_rate(n, effect_in_sd, trials, seed=0):
    """Share of trials in which an arm with a true mean delta of `effect_in_sd` SDs of the deltas wins."""
    rng = np.random.default_rng(seed)
    # the deltas are the arm's N(0, 1) noise plus the effect: their SD is 1
    return float(np.mean([simulated_family(rng, n, effect_in_sd)[0].verdict == "wins" for _ in range(trials)]))


if __name__ == "__main__":
    trials = 1000
    for n in (10, 30, 200):
        print(f"no true difference, {n} personas, 3 arms: declared in {false_positive_rate(n, trials):.1%} of {trials} trials")
    print(f"1 SD true difference, 30 personas: wins in {win_rate(30, 1.0, trials):.1%} of {trials} trials")
