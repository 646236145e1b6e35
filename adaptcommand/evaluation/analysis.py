"""The study's own questions, from an evaluation's output files: who benefits, compute against gain,
memorisation and the learning curve (scripts/analyze_results.py writes them into analysis.md).

Everything here reads tables eval_lora.py already wrote (per_persona.csv, per_persona_seed.csv,
training_costs.csv, memorization.csv, comparison.csv); nothing runs a model.
"""

import numpy as np
import pandas as pd

from adaptcommand.evaluation.study_stats import minimum_detectable_effect
from adaptcommand.model.arm_registry import BASELINE, COMPARATOR, PER_USER_LORA, UNIFIED, comparator_pairs

# (arm, reference): the per-persona gains the who-benefits table correlates with the personas' traits
GAINS = (*((arm, UNIFIED.name) for arm in PER_USER_LORA), *comparator_pairs(PER_USER_LORA + (COMPARATOR.name,)),
         ("retrieval", BASELINE.name))
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
            for ref, ref_seed in ((BASELINE.name, None), (UNIFIED.name, cost["seed"])):
                if ref == cost["arm"]:
                    continue
                paired = (mine - _seed_scores(seeds, ref, ref_seed, metric)).dropna()
                row[f"delta_vs_{ref}_{metric}"] = float(paired.mean()) if len(paired) else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def projected_mde(compared, metric, sizes=(12, 30, 100, 200), alpha=None):
    """Each comparison's minimum detectable effect on `metric` at other numbers of personas, from the SD of
    its per-persona deltas as observed. alpha None (the primary metric): the MDE the evaluation reported (80%
    power at its family's strictest Holm level) scaled by sqrt(personas / n). alpha given (a secondary metric
    such as the cloze, which is in no Holm family and has no reported MDE): 80% power at that level, unadjusted."""
    known = compared["mde"].notna() if alpha is None else compared["delta_sd"].notna()
    chosen = compared[(compared["metric"] == metric) & (compared["personas"] > 0) & known]
    rows = []
    for record in chosen.to_dict("records"):
        if alpha is None:
            mde = {f"mde_{n}": record["mde"] * np.sqrt(record["personas"] / n) for n in sizes}
        else:
            mde = {f"mde_{n}": minimum_detectable_effect(record["delta_sd"], n, alpha) for n in sizes}
        rows.append({"arm": record["arm"], "ref": record["ref"], "personas": record["personas"],
                     "delta": record["macro_delta"], "delta_sd": record["delta_sd"], **mde})
    return pd.DataFrame(rows)


def memorization_gaps(memorization):
    """memorization.csv (arm, split, turns, cloze_items, routine_f1, cloze_top1: macro means) as one row per
    arm with train, test and train - test for each metric, and the turns and cloze items on each split."""
    out = []
    for arm, rows in memorization.groupby("arm", sort=False):
        by_split = rows.set_index("split")
        row = {"arm": arm, **{f"{s}_{n}": by_split[n].get(s, np.nan) for n in ("turns", "cloze_items")
                              if n in by_split for s in ("train", "test")}}
        for metric in GAIN_METRICS:
            train, test = (by_split[metric].get(s, np.nan) for s in ("train", "test"))
            row.update({f"train_{metric}": train, f"test_{metric}": test, f"gap_{metric}": train - test})
        out.append(row)
    return pd.DataFrame(out)


def curve_points(points, arms=PER_USER_LORA, refs=(UNIFIED.name,)):
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


def cloze_item_breakdown(items):
    """Top-1 of each arm (and seed) on the cloze's fresh items (cloze_items.csv; pooled over items), split by
    what could explain it: whether the habit baseline (the user's most common train value) gets the item
    right, and whether the item is the first value the user states in its dialogue (nothing stated before it
    tells which routine the session follows) or a later one."""
    fresh = items[~items["in_context"].astype(bool)].sort_values(
        ["arm", "seed", "dialog_index", "message_index"], kind="stable")
    fresh = fresh.assign(later=fresh.groupby(["arm", "seed", "dialog_index"], dropna=False).cumcount() > 0)
    rows = []
    for (arm, seed), g in fresh.groupby(["arm", "seed"], sort=False, dropna=False):
        correct, habit, later = g["correct"].astype(bool), g["habit_correct"].astype(bool), g["later"]
        rows.append({"arm": arm, "seed": seed, "items": len(g), "top1": correct.mean(), "habit_top1": habit.mean(),
                     "top1_where_habit_right": correct[habit].mean(), "top1_where_habit_wrong": correct[~habit].mean(),
                     "top1_first_value": correct[~later].mean(), "top1_later_values": correct[later].mean()})
    return pd.DataFrame(rows)


def markdown_table(frame, columns):
    """A markdown table of these columns, numbers with 3 decimals, blanks for missing values."""
    return frame[list(columns)].to_markdown(index=False, floatfmt=".3f", missingval="") + "\n"


def stated_value_sources(dialogs, splits, predictions):
    """Where each arm's stated routine values come from: for every setting an arm's reply first states at an
    open turn (as routine F1 scores it), whether the value is the session's (precision), this user's most
    common train value, or the population's most common train value.

    predictions: the evaluation's predictions.jsonl rows (test split). One row per arm and seed.
    """
    from adaptcommand.evaluation.action_metrics import ActionExtractor
    from adaptcommand.evaluation.routine_knowledge import EVERYONE, message_actions, session_settings, usual_settings

    extract = ActionExtractor().extract_actions
    usual = usual_settings(dialogs, {p: s["train"] for p, s in splits.items()})
    settings_of, first = {}, {}
    for row in sorted((r for r in predictions if r.get("split", "test") == "test"),
                      key=lambda r: (r["arm"], str(r.get("seed")), r["dialog_index"], r["turn_index"])):
        index, turn = row["dialog_index"], row["turn_index"]
        if index not in settings_of:
            settings_of[index] = session_settings(dialogs[index], message_actions(dialogs[index], extract))
        predicted = extract(row["prediction"], dialogs[index]["messages"][:turn])
        for s in settings_of[index]:
            key = (row["arm"], row.get("seed"), index, s.device, s.param)
            if key not in first and turn in s.open_turns and s.param in predicted.get(s.device, {}):
                value = predicted[s.device][s.param]
                persona = row["persona_id"]

                def top(who):
                    return (usual.get(who, {}).get(s.device, {}).get(s.param) or [None])[0]
                first[key] = (value == s.value, value == top(persona), value == top(EVERYONE))
    frame = pd.DataFrame([(arm, seed, *flags) for (arm, seed, *_), flags in first.items()],
                         columns=["arm", "seed", "session_value", "user_usual_value", "everyone_usual_value"])
    out = frame.groupby(["arm", "seed"], sort=False, dropna=False).agg(
        stated=("session_value", "size"), session_value=("session_value", "mean"),
        user_usual_value=("user_usual_value", "mean"), everyone_usual_value=("everyone_usual_value", "mean"))
    return out.reset_index()
