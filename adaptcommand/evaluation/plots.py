"""PNG plots of an evaluation: per-persona deltas, arm comparison, per-user vs unified."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from adaptcommand.data.data_io import atomic_path  # noqa: E402
from adaptcommand.evaluation.tables import arm_interval  # noqa: E402
from adaptcommand.model.arm_registry import PER_USER_LORA, UNIFIED  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def delta_histograms(frame, metric, path):
    """One histogram per arm of its per-persona `metric` minus the baseline's."""
    table = frame.pivot(index="persona_id", columns="arm", values=metric)
    others = [a for a in table.columns if a != "baseline"]
    fig, axes = plt.subplots(1, max(1, len(others)), figsize=(3.2 * max(1, len(others)), 2.8), squeeze=False)
    for ax, arm in zip(axes[0], others):
        deltas = (table[arm] - table["baseline"]).dropna() if "baseline" in table else table[arm].iloc[:0]
        ax.hist(deltas, bins=min(20, max(3, len(deltas))), color="tab:blue", alpha=0.8)
        ax.axvline(0, color="black", lw=1)
        ax.set_title(f"{arm}\nn={len(deltas)}", fontsize=9)
        ax.set_xlabel(f"delta {metric} vs baseline", fontsize=8)
    axes[0][0].set_ylabel("personas")
    return _save(fig, path)


def arm_intervals(seeds, metrics, n_boot=2000):
    """{(arm, metric): (mean, low, high)}: what `arm_comparison` draws, the arm table's interval for each."""
    arms = list(dict.fromkeys(seeds["arm"]))
    return {(arm, metric): arm_interval(seeds, arm, metric, n_boot) for metric in metrics if metric in seeds
            for arm in arms}


def arm_comparison(seeds, metrics, path, n_boot=2000):
    """Per arm and metric, the mean over personas with the arm table's 95% interval (personas and seeds
    resampled); an arm with no value for a metric gets no bar."""
    intervals = arm_intervals(seeds, metrics, n_boot)
    arms = list(dict.fromkeys(seeds["arm"]))
    metrics = [m for m in metrics if m in seeds]
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(arms), 3.4))
    width = 0.8 / max(1, len(metrics))
    for k, metric in enumerate(metrics):
        means, errors = [], [[], []]
        for arm in arms:
            mean, low, high = intervals[(arm, metric)]
            defined = not math.isnan(mean)
            means.append(mean if defined else 0.0)
            errors[0].append(mean - low if defined else 0.0)
            errors[1].append(high - mean if defined else 0.0)
        ax.bar([i + k * width for i in range(len(arms))], means, width, yerr=errors, capsize=2, label=metric)
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(arms))])
    ax.set_xticklabels(arms, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean over personas (95% CI)", fontsize=8)
    ax.legend(fontsize=7)
    return _save(fig, path)


def per_user_vs_unified(seeds, metric, path):
    """Each persona: the unified adapter's score (x) against the per-user arms' (y), mean over seeds,
    with bars spanning the lowest to the highest seed."""
    stats = seeds.groupby(["persona_id", "arm"])[metric].agg(["mean", "min", "max"]).reset_index()
    unified = stats[stats["arm"] == UNIFIED.name].set_index("persona_id")
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    for arm, marker in zip(PER_USER_LORA, "o^sv"):
        points = stats[stats["arm"] == arm].set_index("persona_id").join(unified, rsuffix="_all", how="inner").dropna()
        if len(points):
            ax.errorbar(points["mean_all"], points["mean"], fmt=marker, alpha=0.8, label=arm, capsize=2,
                        xerr=[points["mean_all"] - points["min_all"], points["max_all"] - points["mean_all"]],
                        yerr=[points["mean"] - points["min"], points["max"] - points["mean"]])
    ax.plot([0, 1], [0, 1], color="black", lw=1)
    ax.set_xlabel(f"{UNIFIED.name} {metric} (seed range)")
    ax.set_ylabel(f"per-user {metric} (seed range)")
    ax.legend(fontsize=7)
    return _save(fig, path)


def trait_scatter(gains, traits, path):
    """One panel per (gain, trait): each persona's gain (y) against its trait (x); exploratory."""
    merged = gains.merge(traits, on="persona_id")
    gain_columns = [c for c in gains.columns if c != "persona_id"]
    trait_columns = [c for c in traits.columns if c != "persona_id"]
    fig, axes = plt.subplots(max(1, len(gain_columns)), len(trait_columns),
                             figsize=(2.4 * len(trait_columns), 2.2 * max(1, len(gain_columns))), squeeze=False)
    for row, gain in enumerate(gain_columns):
        for col, trait in enumerate(trait_columns):
            ax = axes[row][col]
            ax.scatter(merged[trait], merged[gain], s=12, alpha=0.8)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_xlabel(trait, fontsize=7)
            if col == 0:
                ax.set_ylabel(gain, fontsize=7)
            ax.tick_params(labelsize=6)
    return _save(fig, path)


def compute_against_gain_plot(table, metric, path):
    """Each adapter arm and seed: training seconds (x, log scale) against its mean Δ `metric` vs baseline
    (y), or vs lora_all where the evaluation had no baseline arm; None (no plot) when no arm has a Δ."""
    column = next((c for c in (f"delta_vs_baseline_{metric}", f"delta_vs_lora_all_{metric}")
                   if c in table and table[c].notna().any()), None)
    if column is None:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    for arm, rows in table.dropna(subset=[column]).groupby("arm", sort=False):
        ax.scatter(rows["seconds"], rows[column], label=arm, s=20)
    ax.set_xscale("log")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("training seconds (all adapters of the arm)", fontsize=8)
    ax.set_ylabel(f"Δ {metric} vs {column.removeprefix('delta_vs_').removesuffix('_' + metric)}", fontsize=8)
    ax.legend(fontsize=7)
    return _save(fig, path)


def learning_curve_plot(curve, path):
    """Δ against the reference (95% interval) by train sessions per persona, one line per arm, reference and metric."""
    metrics = list(dict.fromkeys(curve["metric"]))
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(3.8 * max(1, len(metrics)), 3.0), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for (arm, ref), rows in curve[curve["metric"] == metric].groupby(["arm", "ref"], sort=False):
            rows = rows.dropna(subset=["macro_delta"]).sort_values("train_sessions")
            ax.errorbar(rows["train_sessions"], rows["macro_delta"], capsize=3, marker="o", label=f"{arm} - {ref}",
                        yerr=[rows["macro_delta"] - rows["ci_low"], rows["ci_high"] - rows["macro_delta"]])
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xlabel("train sessions per persona", fontsize=8)
        ax.set_ylabel(f"Δ {metric} (95% CI)", fontsize=8)
        ax.legend(fontsize=6)
    return _save(fig, path)
