"""PNG plots of an evaluation: per-persona deltas, arm comparison, per-user vs unified."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path):
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return path


def delta_histograms(per_persona, arms, metric, path):
    """One histogram per arm of its per-persona `metric` minus the baseline's."""
    others = [a for a in arms if a != "baseline"]
    fig, axes = plt.subplots(1, max(1, len(others)), figsize=(3.2 * max(1, len(others)), 2.8), squeeze=False)
    for ax, arm in zip(axes[0], others):
        deltas = [m[arm][metric] - m["baseline"][metric] for m in per_persona.values()
                  if m.get(arm, {}).get(metric) is not None and m.get("baseline", {}).get(metric) is not None]
        ax.hist(deltas, bins=min(20, max(3, len(deltas))), color="tab:blue", alpha=0.8)
        ax.axvline(0, color="black", lw=1)
        ax.set_title(f"{arm}\nn={len(deltas)}", fontsize=9)
        ax.set_xlabel(f"delta {metric} vs baseline", fontsize=8)
    axes[0][0].set_ylabel("personas")
    return _save(fig, path)


def arm_comparison(arm_metrics, metrics, path):
    arms = list(arm_metrics)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(arms), 3.2))
    width = 0.8 / len(metrics)
    for k, metric in enumerate(metrics):
        values = [arm_metrics[a].get(metric) or 0.0 for a in arms]
        ax.bar([i + k * width for i in range(len(arms))], values, width, label=metric)
    ax.set_xticks([i + width * (len(metrics) - 1) / 2 for i in range(len(arms))])
    ax.set_xticklabels(arms, rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    return _save(fig, path)


def per_user_vs_unified(per_persona, metric, path):
    """Each persona: the unified adapter's score (x) against the per-user arms' (y)."""
    fig, ax = plt.subplots(figsize=(3.8, 3.6))
    for arm, marker in (("lora_per_user", "o"), ("lora_per_user_on_all", "^")):
        points = [(m["lora_all"][metric], m[arm][metric]) for m in per_persona.values()
                  if m.get("lora_all", {}).get(metric) is not None and m.get(arm, {}).get(metric) is not None]
        if points:
            ax.scatter(*zip(*points), marker=marker, label=arm, alpha=0.8)
    ax.plot([0, 1], [0, 1], color="black", lw=1)
    ax.set_xlabel(f"lora_all {metric}")
    ax.set_ylabel(f"per-user {metric}")
    ax.legend(fontsize=7)
    return _save(fig, path)
