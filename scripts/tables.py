"""The evaluation's tables as pandas DataFrames: per persona, per arm, deltas and the comparison.

`persona_frame` is the long table (one row per persona and arm, one column per metric) from which
everything else is pivoted: the per-persona deltas against a reference arm, and the comparison of
each arm against the reference arms with the paired statistics of scripts/study_stats.py.
"""

import pandas as pd

from scripts.evaluation import SUMMARY_COLUMNS, aggregate, aggregate_per_persona
from scripts.study_stats import paired_comparison

POLICY_NOTES = {"silent": "replies \"Okay.\" (no model): what saying nothing scores",
                "echo": "repeats the user's last message (no model): what copying the user scores",
                "oracle": "states the applied routine's settings for the devices talked about (no model, reads "
                          "the reference): what perfect memory scores"}


def persona_frame(records_by_arm):
    """One row per (persona, arm): that persona's metrics on that arm."""
    rows = [{"persona_id": persona, "arm": arm, **metrics}
            for arm, records in records_by_arm.items()
            for persona, metrics in aggregate_per_persona(records).items()]
    return pd.DataFrame(rows).sort_values(["persona_id", "arm"], kind="stable").reset_index(drop=True)


def arm_frame(records_by_arm):
    """One row per arm: its metrics over all its turns (pooled)."""
    return pd.DataFrame([{"arm": arm, **aggregate(records)} for arm, records in records_by_arm.items()]).set_index("arm")


def with_cloze(frame, arm_table, results):
    """The per-persona and per-arm tables with the preference cloze's columns: top-1 accuracy,
    items, chance and the majority-value baseline (per arm: means over personas)."""
    if not results:
        return frame, arm_table
    cloze = (pd.DataFrame([vars(r) for r in results])
             .groupby(["persona_id", "arm"])
             .agg(cloze_top1=("correct", "mean"), cloze_items=("correct", "size"), cloze_chance=("chance", "mean"),
                  cloze_majority=("majority_correct", "mean"))
             .reset_index())
    frame = frame.merge(cloze, on=["persona_id", "arm"], how="left")
    per_arm = cloze.groupby("arm")[["cloze_top1", "cloze_chance", "cloze_majority"]].mean()
    return frame, arm_table.join(per_arm)


def csv_rows(frame):
    """Rows as dicts with None (an empty CSV cell, JSON null) where pandas has NaN."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


def wide(frame, metric):
    """persona x arm table of one metric."""
    return frame.pivot(index="persona_id", columns="arm", values=metric)


def with_deltas(frame, refs, metrics):
    """The long table with delta_vs_<ref>_<metric> columns: each row's metric minus the reference arm's."""
    out = frame.copy()
    for metric in metrics:
        table = wide(frame, metric)
        for ref in refs:
            if ref not in table:
                continue
            delta = table.sub(table[ref], axis=0).stack(future_stack=True).rename(f"delta_vs_{ref}_{metric}")
            out = out.merge(delta.reset_index(), on=["persona_id", "arm"], how="left")
            out.loc[out["arm"] == ref, f"delta_vs_{ref}_{metric}"] = None
    return out


def comparison_table(frame, arms, refs, metrics, n_boot):
    """One row per arm: its pooled metrics, then per reference arm and metric the paired statistics."""
    rows = []
    for arm in arms.index:
        row = {"arm": arm, **{k: arms.loc[arm].get(k) for k in ("personas", "macro_routine_f1") + SUMMARY_COLUMNS
                              + ("cloze_top1", "cloze_chance", "cloze_majority")}}
        for ref in refs:
            if ref == arm or ref not in arms.index:
                continue
            for metric in metrics:
                table = wide(frame, metric)
                stats = paired_comparison(table[arm].dropna().to_dict(), table[ref].dropna().to_dict(), n_boot, seed=0)
                row.update({f"vs_{ref}:{metric}:{key}": value for key, value in stats.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def fmt(value, digits=3):
    return "n/a" if value is None or pd.isna(value) else f"{value:.{digits}f}"


def markdown_table(table, metric):
    """The comparison as a markdown table: the headline metrics and the deltas on `metric`."""
    def delta(row, ref):
        d = row.get(f"vs_{ref}:{metric}:macro_delta")
        if d is None or pd.isna(d):
            return "–"
        return f"{d:+.3f} [{row[f'vs_{ref}:{metric}:ci_low']:+.3f}, {row[f'vs_{ref}:{metric}:ci_high']:+.3f}]"

    def helped(row):
        h = row.get(f"vs_baseline:{metric}:helped")
        return "–" if h is None or pd.isna(h) else f"{h:.0%} / {row[f'vs_baseline:{metric}:hurt']:.0%}"

    def sign_p(row):
        p = row.get(f"vs_baseline:{metric}:sign_test_p")
        return "–" if p is None or pd.isna(p) else f"{p:.3g}"

    shown = pd.DataFrame({
        "arm": table["arm"], "personas": table["personas"].astype("Int64").astype(str),
        "turns": table["turns"].astype("Int64").astype(str),
        "routine F1 (macro)": table["macro_routine_f1"].map(fmt), "routine P / R (pooled)": [
            f"{fmt(r['routine_precision'])} / {fmt(r['routine_recall'])}" for _, r in table.iterrows()],
        "param F1": table["param_f1"].map(fmt), "given / private": [
            f"{fmt(r['param_given_f1'])} / {fmt(r['param_private_f1'])}" for _, r in table.iterrows()],
        "device F1": table["device_f1"].map(fmt), "embedding sim": table["embedding_similarity"].map(fmt),
        "cloze top-1": table["cloze_top1"].map(fmt),
        f"Δ {metric} vs baseline [95% CI]": [delta(r, "baseline") for _, r in table.iterrows()],
        "helped / hurt": [helped(r) for _, r in table.iterrows()],
        "sign p": [sign_p(r) for _, r in table.iterrows()],
        f"Δ {metric} vs lora_all [95% CI]": [delta(r, "lora_all") for _, r in table.iterrows()],
    })
    notes = [f"- {arm}: {POLICY_NOTES[arm]}" for arm in table["arm"] if arm in POLICY_NOTES]
    if table["cloze_chance"].notna().any():
        notes.append(f"- cloze top-1: the user's routine value ranked first where the user states it; chance "
                     f"{fmt(table['cloze_chance'].dropna().iloc[0])}, always the most common train value "
                     f"{fmt(table['cloze_majority'].dropna().iloc[0])}")
    return shown.to_markdown(index=False, disable_numparse=True) + "\n" + ("\n" + "\n".join(notes) + "\n" if notes else "")
