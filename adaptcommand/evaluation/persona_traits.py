"""Who benefits: each persona's properties computed from the data, and their rank correlation with
the per-persona gains of an evaluation (exploratory: correlations with bootstrap intervals, no verdicts).

Traits (from the cleaned dialogues and the splits only, never from a model):
- routines: how many routines the persona has;
- value_entropy: how inconsistent the persona's values are across its routines, the mean over
  (device, parameter) of the entropy (bits) of the values its routines set;
- routine_share: the share of its sessions that apply a routine (the rest are spontaneous);
- train_sessions: its train dialogues;
- habit_gap: on its train sessions, the share of prescribed settings that its own most frequent
  value gets right minus the share the population's most frequent value gets right (the
  user_usual - everyone_usual gap, measured where the habits were counted).
"""

import math
from collections import Counter

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from adaptcommand.data.schema import active_actions
from adaptcommand.evaluation.action_metrics import prescribed_settings
from adaptcommand.evaluation.routine_knowledge import EVERYONE, usual_settings

TRAITS = ("routines", "value_entropy", "routine_share", "train_sessions", "habit_gap")


def entropy_bits(values):
    counts = Counter(values)
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def _settings(dialog):
    return prescribed_settings(dialog.get("meta"), dialog.get("routines") or [], dialog.get("applied_routines")) or {}


def value_entropy(routines):
    """Mean entropy (bits) over (device, parameter) of the values the routines set; 0 for one routine or none."""
    values = {}
    for routine in routines:
        for device, params in active_actions(routine.get("actions")).items():
            for param, value in params.items():
                values.setdefault((device, param), []).append(value)
    return float(np.mean([entropy_bits(v) for v in values.values()])) if values else 0.0


def habit_hits(dialogs, indices, usual, who):
    """(right, settings): how many prescribed settings of these sessions `who`'s most frequent value gets right."""
    right = total = 0
    for i in indices:
        for device, params in _settings(dialogs[i]).items():
            for param, value in params.items():
                ranked = usual.get(who, {}).get(device, {}).get(param) or [None]
                right, total = right + (ranked[0] == value), total + 1
    return right, total


def persona_traits(dialogs, splits):
    """One row per persona of the splits with its TRAITS."""
    usual = usual_settings(dialogs, {p: s["train"] for p, s in splits.items()})
    rows = []
    for persona, entry in splits.items():
        sessions = sorted({i for part in ("train", "val", "test") for i in entry.get(part, [])})
        routines = dialogs[sessions[0]].get("routines") or [] if sessions else []
        own, total = habit_hits(dialogs, entry["train"], usual, persona)
        population, _ = habit_hits(dialogs, entry["train"], usual, EVERYONE)
        rows.append({"persona_id": persona, "routines": len(routines), "value_entropy": value_entropy(routines),
                     "routine_share": (sum(bool(dialogs[i].get("applied_routines")) for i in sessions) / len(sessions)
                                       if sessions else None),
                     "train_sessions": len(entry["train"]),
                     "habit_gap": (own - population) / total if total else None})
    return pd.DataFrame(rows, columns=["persona_id", *TRAITS])


def spearman_interval(x, y, n_boot=2000, seed=0):
    """(rho, low, high, n): Spearman's rank correlation and a 95% percentile bootstrap interval over personas.
    rho is None with fewer than 3 pairs or a constant side; resamples where a side is constant are skipped."""
    pairs = np.array([(a, b) for a, b in zip(x, y) if a is not None and b is not None
                      and not (isinstance(a, float) and math.isnan(a)) and not (isinstance(b, float) and math.isnan(b))],
                     dtype=float).reshape(-1, 2)
    n = len(pairs)
    if n < 3 or np.ptp(pairs[:, 0]) == 0 or np.ptp(pairs[:, 1]) == 0:
        return None, None, None, n
    rho = float(spearmanr(pairs[:, 0], pairs[:, 1]).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        sample = pairs[rng.integers(0, n, n)]
        if np.ptp(sample[:, 0]) and np.ptp(sample[:, 1]):
            boots.append(spearmanr(sample[:, 0], sample[:, 1]).statistic)
    low, high = np.percentile(boots, [2.5, 97.5]) if boots else (None, None)
    return rho, float(low), float(high), n


def who_benefits(deltas, traits, n_boot=2000):
    """Spearman correlation of every gain column of `deltas` (persona_id + one column per gain) with every trait.

    Returns one row per (gain, trait): rho, its interval and the number of personas.
    """
    merged = deltas.merge(traits, on="persona_id")
    rows = []
    for gain in [c for c in deltas.columns if c != "persona_id"]:
        for trait in TRAITS:
            rho, low, high, n = spearman_interval(merged[trait].tolist(), merged[gain].tolist(), n_boot)
            rows.append({"gain": gain, "trait": trait, "spearman": rho, "low": low, "high": high, "personas": n})
    return pd.DataFrame(rows, columns=["gain", "trait", "spearman", "low", "high", "personas"])
