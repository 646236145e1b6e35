"""Answer the study's own questions from an evaluation's output files: results/<run>/analysis.md.

    python scripts/analyze_results.py --results results/lora [--curve 5=results/curve_5 10=results/curve_10 ...]
        [--label "synthetic demo data"]

Reads only files eval_lora.py wrote (arm_metrics.json, per_persona.csv, per_persona_seed.csv,
training_costs.csv, comparison.md, memorization.csv when the evaluation had evaluation.train_sessions)
and the dialogues and splits its config names (with the evaluation's --set flags, and this script's
own --set on top); runs no model. Writes analysis.md beside them with:
- who benefits: each persona's traits from the data (adaptcommand/evaluation/persona_traits.py)
  against its gains (per-user arms vs lora_all, retrieval vs baseline), Spearman correlations with
  bootstrap intervals, exploratory (no verdicts), and scatter plots (who_benefits.png);
- compute against gain: training seconds, steps, tokens, adapter size and device per adapter arm
  and seed beside its mean Δ routine F1 and cloze vs baseline and vs lora_all (compute_vs_gain.png);
- what the arms state: for the settings an arm states, how often it is the session's value, the
  user's most common one or the population's most common one (from predictions.jsonl);
- memorisation: the arms on train sessions beside test (the gap);
- the learning curve, when --curve gives evaluations of adapters trained on N sessions per persona
  (training.max_train_sessions): Δ vs lora_all against N (learning_curve.png);
- the evaluation's own tables (comparison.md), the minimum detectable effect projected to other numbers
  of personas from the observed SD of the deltas, and the time breakdown.
"""

import argparse
import json
from pathlib import Path

import pandas as pd

from adaptcommand.data.data_io import UserError, load_dialogs, read_json, run_cli, write_text_atomic
from adaptcommand.data.splits import load_splits
from adaptcommand.evaluation.analysis import (
    GAIN_METRICS,
    cloze_item_breakdown,
    compute_against_gain,
    curve_points,
    markdown_table,
    memorization_gaps,
    persona_gains,
    projected_mde,
    stated_value_sources,
)
from adaptcommand.evaluation.costs import time_breakdown
from adaptcommand.evaluation.persona_traits import TRAITS, persona_traits, who_benefits
from adaptcommand.evaluation.plots import compute_against_gain_plot, learning_curve_plot, trait_scatter
from adaptcommand.evaluation.study_stats import ALPHA
from adaptcommand.model.config import load_config


def read_table(folder, name, required=True):
    path = Path(folder) / name
    if not path.is_file():
        if required:
            raise UserError(f"{path}: not found; run scripts/eval_lora.py with --output_dir {folder} first")
        return None
    return pd.read_csv(path)


def parse_curve(items):
    """{N: folder} from N=FOLDER arguments."""
    points = {}
    for item in items:
        n, sep, folder = item.partition("=")
        if not sep or not n.isdigit() or int(n) < 1:
            raise UserError(f"--curve {item!r}: expected N=FOLDER with N the train sessions per persona (>= 1)")
        points[int(n)] = read_table(folder, "comparison.csv")
    return points


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="an evaluation's output folder (eval_lora.py --output_dir)")
    parser.add_argument("--curve", nargs="*", default=[], metavar="N=FOLDER",
                        help="evaluations of adapters trained on N train sessions per persona")
    parser.add_argument("--label", default="", help="what the data is, in the report's title (say 'synthetic')")
    parser.add_argument("--n_bootstrap", type=int, default=2000, help="bootstrap resamples for the intervals")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override the evaluation's config (its file and --set flags, from arm_metrics.json), "
                             "e.g. --set data.dialogs=data/x.jsonl; repeatable")
    args = parser.parse_args()
    out = Path(args.results)
    summary_path = out / "arm_metrics.json"
    if not summary_path.is_file():
        raise UserError(f"{summary_path}: not found; run scripts/eval_lora.py with --output_dir {out} first")
    summary = read_json(summary_path)
    cfg = load_config(summary["config_file"], summary.get("config_overrides", []) + args.set)
    frame = read_table(out, "per_persona.csv")
    seeds = read_table(out, "per_persona_seed.csv")
    costs = read_table(out, "training_costs.csv", required=False)  # older evaluations did not write it
    memorization = read_table(out, "memorization.csv", required=False)
    curve = parse_curve(args.curve)
    dialogs = load_dialogs(cfg.data.dialogs)
    splits = load_splits(cfg.data.splits, dialogs)
    traits = persona_traits(dialogs, splits)
    traits = traits[traits["persona_id"].isin(frame["persona_id"])]
    metric = summary["primary_metric"]

    sections = [f"# Analysis{': ' + args.label if args.label else ''}\n",
                f"From `{out}` (config `{summary['config_file']}`, {summary['turns']} test turns, "
                f"{frame['persona_id'].nunique()} personas), by `scripts/analyze_results.py`.\n",
                "## The evaluation\n", (out / "comparison.md").read_text(encoding="utf-8")]

    compared = read_table(out, "comparison.csv")
    mde = projected_mde(compared, metric)
    if len(mde):
        sections.append("## How many personas would detect it\n")
        sections.append(f"The minimum detectable effect on {metric} (80% power, the family's strictest Holm level) at other "
                        "numbers of personas, from the SD of the per-persona deltas observed here:\n\n")
        sections.append(markdown_table(mde, list(mde.columns)) + "\n")
    cloze_mde = projected_mde(compared, "cloze_top1", alpha=ALPHA)
    if len(cloze_mde):
        sections.append(f"The same for cloze top-1, a secondary metric (no Holm family: 80% power at {ALPHA}, "
                        "unadjusted), which scores the adapters even where they rarely state a value in a reply:\n\n")
        sections.append(markdown_table(cloze_mde, list(cloze_mde.columns)) + "\n")

    sections.append("## Who benefits (exploratory: correlations, no verdicts)\n")
    sections.append(markdown_table(traits, ["persona_id", *TRAITS]))
    plots = []
    for gain_metric in dict.fromkeys([metric, *GAIN_METRICS]):
        gains = persona_gains(frame, gain_metric)
        if len(gains.columns) == 1:
            continue
        table = who_benefits(gains, traits, args.n_bootstrap)
        sections.append(f"\nSpearman correlation of each persona's Δ {gain_metric} with its traits "
                        f"(95% bootstrap interval over personas):\n")
        sections.append(markdown_table(table, ["gain", "trait", "spearman", "low", "high", "personas"]))
        plots.append(trait_scatter(gains, traits, out / f"who_benefits_{gain_metric}.png"))
    sections.append("\n" + "\n".join(f"![who benefits]({p.name})" for p in plots) + "\n")

    sections.append("## Compute against gain\n")
    if costs is not None and len(costs):
        table = compute_against_gain(costs, seeds)
        delta_columns = [c for c in table.columns if c.startswith("delta_vs_")]
        sections.append(markdown_table(table, ["arm", "seed", "adapters", "seconds", "optimizer_steps", "train_tokens",
                                               "adapter_mb", "device", *delta_columns]))
        plot = compute_against_gain_plot(table, metric, out / "compute_vs_gain.png")
        if plot is not None:
            plots.append(plot)
            sections.append(f"\n![compute against gain]({plot.name})\n")
    else:
        sections.append("No adapter arm's training costs (no adapter arm, or an evaluation older than training_costs.csv).\n")

    predictions = out / "predictions.jsonl"
    if predictions.is_file():
        rows = [json.loads(line) for line in predictions.read_text(encoding="utf-8").splitlines() if line.strip()]
        stated = stated_value_sources(dialogs, splits, rows)
        sections.append("## What the arms state\n")
        sections.append("Of the routine settings each arm first states at an open turn (pooled over sessions), the "
                        "share stated with the session's value (precision), with this user's most common train value "
                        "and with the population's most common train value:\n\n")
        sections.append(markdown_table(stated, ["arm", "seed", "stated", "session_value", "user_usual_value",
                                                "everyone_usual_value"]) + "\n")

    items = read_table(out, "cloze_items.csv", required=False)
    if items is not None:
        sections.append("## The cloze item by item\n")
        sections.append("Top-1 on the items whose value the dialogue had not stated yet, pooled over items: where the "
                        "habit baseline (this user's most common train value) is right and where it is wrong, and on "
                        "the first value the user states in a dialogue against the later ones, which the values "
                        "stated before them can tell:\n\n")
        breakdown = cloze_item_breakdown(items)
        sections.append(markdown_table(breakdown, list(breakdown.columns)) + "\n")

    sections.append("## Memorisation: train sessions against test\n")
    if memorization is not None:
        sections.append("Each persona's last routine-driven train sessions (evaluation.train_sessions) against its test "
                        "sessions. A large train - test gap with no gain on test is memorising; baseline's gap is what "
                        "the sessions' difficulty alone gives. Few cloze items make a noisy mean: their counts are "
                        "beside it.\n\n")
        gaps = memorization_gaps(memorization)
        sections.append(markdown_table(gaps, [
            "arm", *[f"{kind}_{m}" for m in GAIN_METRICS for kind in ("train", "test", "gap")],
            *[c for c in ("train_turns", "test_turns", "train_cloze_items", "test_cloze_items") if c in gaps]]))
    else:
        sections.append("Not measured: set evaluation.train_sessions in the evaluation config.\n")

    if curve:
        points = curve_points(curve)
        sections.append("## Learning curve\n")
        sections.append(markdown_table(points, list(points.columns)))
        sections.append(f"\n![learning curve]({learning_curve_plot(points, out / 'learning_curve.png').name})\n")

    sections.append("## Time\n")
    if costs is not None:
        sections.append(time_breakdown(costs, summary.get("stage_seconds", {})))
    report = out / "analysis.md"
    write_text_atomic(report, "\n".join(sections))
    print(f"wrote {report} and {len(plots) + bool(curve)} plot(s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
