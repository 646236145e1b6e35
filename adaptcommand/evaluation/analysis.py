"""The study's own questions, from an evaluation's output files: who benefits, compute against gain,
memorisation and the learning curve (scripts/analyze_results.py writes them into analysis.md).

Everything here reads tables eval_lora.py already wrote (per_persona.csv, per_persona_seed.csv,
training_costs.csv, memorization.csv, comparison.csv); nothing runs a model.
"""

import numpy as np
import pandas as pd

# (arm, reference): the per-persona gains the who-benefits table correlates with the personas' traits
GAINS = (("lora_per_user", "lora_all"), ("lora_per_user_on_all", "lora_all"), ("retrieval", "baseline"))
GAIN_METRICS = ("routine_f1", "cloze_top1")


def persona_gains(frame, metric):
    """persona_id and one column per GAINS pair present ("<arm> - <ref>"): each persona's metric difference."""
    table = frame.pivot(index="persona_id", columns="arm", values=metric) if metric in frame else pd.DataFrame()
    gains = pd.DataFrame({"persona_id": table.index})
    for arm, ref in GAINS:
        if arm in table and ref in table:
            gains[f"{arm} - {ref}"] = (table[arm] - table[ref]).to_numpy()
    return gains


def _seed_scores(seeds, arm, seed, metric):
    rows = seeds[(seeds["arm"] == arm) & ((seeds["seed"] == seed) if seed is not None else seeds["seed"].isna())]
    return rows.set_index("persona_id")[metric] if metric in rows else pd.Series(dtype=float)


def compute_against_gain(costs, seeds, metrics=GAIN_METRICS):
    """The training costs of each adapter arm and seed beside its mean gain over the personas it covers:
    against baseline and against the unified adapter of the same seed, per metric."""
    rows = []
    for cost in costs.to_dict("records"):
        row = dict(cost)
        for metric in metrics:
            mine = _seed_scores(seeds, cost["arm"], cost["seed"], metric)
            for ref, ref_seed in (("baseline", None), ("lora_all", cost["seed"])):
                if ref == cost["arm"]:
                    continue
                paired = (mine - _seed_scores(seeds, ref, ref_seed, metric)).dropna()
                row[f"delta_vs_{ref}_{metric}"] = float(paired.mean()) if len(paired) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def memorization_gaps(memorization):
    """memorization.csv (arm, split, routine_f1, cloze_top1: macro means) as one row per arm with train,
    test and train - test for each metric."""
    out = []
    for arm, rows in memorization.groupby("arm", sort=False):
        by_split = rows.set_index("split")
        row = {"arm": arm}
        for metric in GAIN_METRICS:
            train, test = (by_split[metric].get(s, np.nan) for s in ("train", "test"))
            row.update({f"train_{metric}": train, f"test_{metric}": test, f"gap_{metric}": train - test})
        out.append(row)
    return pd.DataFrame(out)


def curve_points(points, arms=("lora_per_user", "lora_per_user_on_all"), refs=("lora_all",)):
    """The learning curve: for each (train sessions N, comparison.csv frame), every arm's Δ against each
    reference on the gain metrics, with its interval and verdict."""
    rows = []
    for n, compared in sorted(points.items()):
        for record in compared.to_dict("records"):
            if record["arm"] in arms and record["ref"] in refs and record["metric"] in GAIN_METRICS:
                rows.append({"train_sessions": n, **{k: record.get(k) for k in
                                                     ("arm", "ref", "metric", "personas", "macro_delta", "ci_low", "ci_high", "verdict")}})
    return pd.DataFrame(rows, columns=["train_sessions", "arm", "ref", "metric", "personas", "macro_delta", "ci_low",
                                       "ci_high", "verdict"])


def markdown_table(frame, columns):
    """A markdown table of these columns, numbers with 3 decimals, blanks for missing values."""
    return frame[list(columns)].to_markdown(index=False, floatfmt=".3f", missingval="") + "\n"
