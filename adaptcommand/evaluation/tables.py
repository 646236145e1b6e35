"""The evaluation's tables as pandas DataFrames: per persona and seed, per persona, per arm, comparisons.

`seed_frame` is the long table (one row per persona, arm and training seed; seed None for arms
that are not trained) from which everything else comes: `persona_frame` averages each persona's
seeds, `arm_table` averages personas (macro: the same unit as the deltas), and `comparisons` runs
the paired statistics and the decision rule of adaptcommand/evaluation/study_stats.py on the seed-level scores.
Turn-pooled (micro) figures are kept apart, in `pooled_table`.
"""

from collections import defaultdict

import numpy as np
import pandas as pd

from adaptcommand.evaluation.evaluation import aggregate, aggregate_per_persona
from adaptcommand.evaluation.study_stats import bootstrap_ci, compare, decide, seed_matrix
from adaptcommand.model.arm_registry import ARMS, POLICY


def seed_frame(records_by_arm, cloze_results=()):
    """One row per (persona, arm, seed): that persona's metrics on that arm's adapter of that seed."""
    rows = {}
    for arm, records in records_by_arm.items():
        by_seed = defaultdict(list)
        for r in records:
            by_seed[r.get("seed")].append(r)
        for seed, seed_records in by_seed.items():
            for persona, metrics in aggregate_per_persona(seed_records).items():
                rows[(persona, arm, seed)] = {"persona_id": persona, "arm": arm, "seed": seed, **metrics}
    cloze = defaultdict(list)
    for c in cloze_results:
        cloze[(c.persona_id, c.arm, c.seed)].append(c)
    for key, results in cloze.items():
        if key in rows:
            rows[key].update(cloze_columns(results))
    arm_order = {arm: k for k, arm in enumerate(records_by_arm)}
    frame = pd.DataFrame(list(rows.values()))
    for column in frame.columns.difference(["persona_id", "arm", "seed"]):  # a metric undefined everywhere: NaN
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame.sort_values(["persona_id", "arm"], key=lambda col: col.map(arm_order) if col.name == "arm" else col,
                             kind="stable").reset_index(drop=True)


def cloze_columns(results):
    """One persona's cloze figures: top-1 and its baselines on the items whose value the dialogue had
    not stated yet (knowledge), top-1 on the in-context items apart (copying), and both counts."""
    fresh = [c for c in results if not c.in_context]
    seen = [c for c in results if c.in_context]

    def mean(values):
        return float(np.mean(values)) if values else np.nan

    return {"cloze_top1": mean([c.correct for c in fresh]), "cloze_items": len(fresh),
            "cloze_chance": mean([c.chance for c in fresh]), "cloze_majority": mean([c.majority_correct for c in fresh]),
            "cloze_habit": mean([c.habit_correct for c in fresh]),
            "cloze_in_context_top1": mean([c.correct for c in seen]), "cloze_in_context_items": len(seen)}


def _numeric(frame):
    return [c for c in frame.columns if c not in ("persona_id", "arm", "seed") and pd.api.types.is_numeric_dtype(frame[c])]


def persona_frame(seeds):
    """One row per (persona, arm): the mean over its seeds, and how many seeds there were."""
    grouped = seeds.groupby(["persona_id", "arm"], sort=False)
    frame = grouped[_numeric(seeds)].mean()
    frame["seeds"] = grouped.size()
    return frame.reset_index()


def arm_interval(seeds, arm, metric, n_boot=2000):
    """(mean over personas, 95% interval) of one arm's metric: personas and the arm's seeds resampled,
    as in the comparisons; (NaN, NaN, NaN) when no persona has a value."""
    scores = scores_by_persona(seeds, arm, metric)
    if not scores:
        return np.nan, np.nan, np.nan
    matrix = seed_matrix(list(scores.values()))
    low, high = bootstrap_ci(matrix, np.zeros_like(matrix), n_boot)
    return float(np.nanmean(np.nanmean(matrix, axis=1))), low, high


def arm_table(frame, seeds, metric, n_boot=2000):
    """One row per arm: means over personas (macro), how many personas define the primary metric
    (`personas`: each arm's mean is over its own), its 95% interval and its SD between seeds."""
    table = frame.groupby("arm", sort=False)[_numeric(frame)].mean()
    table["personas"] = frame.groupby("arm", sort=False)[metric].count() if metric in frame else 0
    table["turns"] = frame.groupby("arm", sort=False)["turns"].sum()
    table["seeds"] = seeds.groupby("arm", sort=False)["seed"].nunique()
    for arm in table.index:
        _, table.loc[arm, f"{metric}_ci_low"], table.loc[arm, f"{metric}_ci_high"] = arm_interval(seeds, arm, metric,
                                                                                                    n_boot)
        per_seed = seeds[(seeds["arm"] == arm) & seeds["seed"].notna()].groupby("seed")[metric].mean()
        table.loc[arm, f"{metric}_seed_sd"] = per_seed.std(ddof=1) if len(per_seed) > 1 else np.nan
    return table


def pooled_table(records_by_arm):
    """One row per arm: its metrics over all its turns pooled (micro), a secondary view."""
    return pd.DataFrame([{"arm": arm, **aggregate(records)} for arm, records in records_by_arm.items()]).set_index("arm")


def scores_by_persona(seeds, arm, metric):
    """{persona: {seed: the metric}} of one arm (seed None for untrained arms), undefined values left out."""
    rows = seeds[(seeds["arm"] == arm)]
    if metric not in rows:
        return {}
    out = {}
    for row in rows[rows[metric].notna()].itertuples(index=False):
        seed = None if pd.isna(row.seed) else int(row.seed)
        out.setdefault(row.persona_id, {})[seed] = float(getattr(row, metric))
    return out


def comparison_pairs(arms, refs):
    """(arm, ref) for every arm against every reference arm, each unordered pair once: where both are
    references, the arm listed later in `refs` is compared against the earlier one."""
    pairs = []
    for arm in arms:
        for ref in refs:
            if ref == arm or ref not in arms:
                continue
            if arm in refs and refs.index(arm) < refs.index(ref):
                continue  # its mirror (ref vs arm) is in the family
            pairs.append((arm, ref))
    return pairs


def comparisons(seeds, pairs, primary, secondary, n_boot, min_personas):
    """Each (arm, ref) pair on each metric: the primary metric's comparisons are one family, with Holm and verdicts."""
    family, others = [], []
    for metric in [primary, *[m for m in secondary if m != primary]]:
        for arm, ref in pairs:
            result = compare(arm, ref, metric, scores_by_persona(seeds, arm, metric),
                             scores_by_persona(seeds, ref, metric), n_boot, seed=0)
            (family if metric == primary else others).append(result)
    decide(family, min_personas)
    return pd.DataFrame([vars(c) for c in family + others])


def with_deltas(frame, refs, metrics):
    """The per-persona table with delta_vs_<ref>_<metric> columns: each row's metric minus the reference arm's."""
    out = frame.copy()
    for metric in [m for m in dict.fromkeys(metrics) if m in frame]:  # a metric named twice gets one column
        table = frame.pivot(index="persona_id", columns="arm", values=metric)
        for ref in refs:
            if ref not in table:
                continue
            delta = table.sub(table[ref], axis=0).stack(future_stack=True).rename(f"delta_vs_{ref}_{metric}")
            out = out.merge(delta.reset_index(), on=["persona_id", "arm"], how="left")
            out.loc[out["arm"] == ref, f"delta_vs_{ref}_{metric}"] = None
    return out


def csv_rows(frame):
    """Rows as dicts with None (an empty CSV cell, JSON null) where pandas has NaN."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def fmt(value, digits=3):
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def _interval(row, metric):
    low, high = row.get(f"{metric}_ci_low"), row.get(f"{metric}_ci_high")
    return fmt(row.get(metric)) + ("" if low is None or pd.isna(low) else f" [{low:.3f}, {high:.3f}]")


SHOWN = (("routine F1", "routine_f1"), ("param F1", "param_f1"), ("device F1", "device_f1"),
         ("embedding sim", "embedding_similarity"))


def markdown_tables(table, compared, metric):
    """The arms (means over personas) and the comparisons on the primary metric, as markdown, with notes."""
    rows = table.reset_index()

    def column(name):
        return rows[name].map(fmt) if name in rows else pd.Series(["n/a"] * len(rows))

    arms = pd.DataFrame({
        "arm": rows["arm"], "personas": rows["personas"].astype("Int64").astype(str),
        "seeds": rows["seeds"].astype("Int64").astype(str),
        f"{metric} [95% CI]": [_interval(r, metric) for _, r in rows.iterrows()],
        "seed SD": [fmt(r.get(f"{metric}_seed_sd")) for _, r in rows.iterrows()],
        "cloze top-1 [habit / majority]": [
            "n/a" if pd.isna(r.get("cloze_top1", np.nan))
            else f"{fmt(r['cloze_top1'])} [{fmt(r.get('cloze_habit'))} / {fmt(r.get('cloze_majority'))}]"
            for _, r in rows.iterrows()],
        **{label: column(name) for label, name in SHOWN if name != metric},
        "param given / private": [f"{fmt(r.get('param_given_f1'))} / {fmt(r.get('param_private_f1'))}"
                                  for _, r in rows.iterrows()],
    })
    primary = compared[compared["metric"] == metric] if len(compared) else compared
    comparison = pd.DataFrame({
        "arm": primary.get("arm", []), "vs": primary.get("ref", []),
        "personas": primary.get("personas", pd.Series(dtype=int)).astype(str),
        f"Δ {metric} [95% CI]": [f"{r['macro_delta']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
                                  if r["personas"] else "n/a" for _, r in primary.iterrows()],
        "helped / hurt": [f"{r['helped']:.0%} / {r['hurt']:.0%}" if r["personas"] else "n/a"
                          for _, r in primary.iterrows()],
        "sign p": primary.get("sign_p", pd.Series(dtype=float)).map(lambda v: fmt(v, 3)),
        "Wilcoxon p": primary.get("wilcoxon_p", pd.Series(dtype=float)).map(lambda v: fmt(v, 3)),
        "Holm p": primary.get("holm_p", pd.Series(dtype=float)).map(lambda v: fmt(v, 3)),
        "MDE (80% power)": primary.get("mde", pd.Series(dtype=float)).map(fmt),
        "verdict": primary.get("verdict", pd.Series(dtype=object)),
    })
    notes = [f"- {arm}: {ARMS[arm].note}" for arm in rows["arm"] if arm in ARMS and ARMS[arm].kind == POLICY]
    if "cloze_chance" in rows and rows["cloze_chance"].notna().any():
        first = rows[rows["cloze_chance"].notna()].iloc[0]
        notes.append(f"- cloze top-1: the user's routine value ranked first where the user states it and the dialogue "
                     f"has not stated it yet; beside it, on each arm's own items, always this user's most common "
                     f"train value (habit) and everyone's (majority); chance {fmt(first['cloze_chance'])} "
                     f"({first['arm']}). Items whose value the dialogue already stated (copying) are apart: "
                     f"cloze_in_context_top1 in per_persona.csv")
    trained = rows[rows["seeds"] > 0]
    if len(trained) and trained["seeds"].max() == 1:
        notes.append("- one training seed per adapter arm: seed-to-seed variance is not in these intervals")
    notes.append("- verdict: wins / loses need Holm-adjusted Wilcoxon p < 0.05 over the comparisons of this table "
                 "and a 95% interval (personas and seeds resampled) that excludes 0; MDE: the smallest true Δ "
                 "these personas would detect with 80% power")
    return (arms.to_markdown(index=False, disable_numparse=True) + "\n\n"
            + (comparison.to_markdown(index=False, disable_numparse=True) + "\n\n" if len(comparison) else "")
            + "\n".join(notes) + "\n\n" + HOW_TO_READ)


HOW_TO_READ = (
    "How to read this: the first table is each arm's mean over personas; on routine_f1, echo_assistant is the floor "
    "and oracle the ceiling.\n"
    "The second is each arm minus its reference, persona by persona: only `wins` or `loses` is a finding, and "
    "`too few personas` or `no difference` with a large MDE says the run was too small to tell.\n"
    "What the study has found so far, on which data and how sure: RESULTS.md.\n")
