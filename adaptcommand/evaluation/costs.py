"""What each adapter arm cost to train, read from the train_log.json beside every adapter, and a time
breakdown of a whole study (training from those logs, evaluation stages as measured).

A per-user-on-unified adapter's cost is its own training only; the unified adapter under it is the
lora_all row.
"""

from pathlib import Path

import pandas as pd

from adaptcommand.data.data_io import read_json

COST_COLUMNS = ("arm", "seed", "adapters", "seconds", "optimizer_steps", "train_tokens", "tokens_per_second",
                "floor_tokens_per_second", "adapter_mb", "device")


def folder_mb(folder):
    return sum(f.stat().st_size for f in Path(folder).iterdir() if f.is_file()) / 2**20


def training_costs(availability):
    """One row per adapter arm and seed: adapters, training seconds, optimizer steps and tokens summed over
    its adapters, tokens per second beside the model's forward+backward floor, mean adapter size, device.

    availability: {arm: ArmAdapters} (adaptcommand.evaluation.arms.find_adapters).
    """
    rows = []
    for arm, found in availability.items():
        for seed in found.seeds():
            folders = sorted({str(by_seed[seed]) for by_seed in found.found.values() if seed in by_seed})
            logs = [read_json(Path(f) / "train_log.json") for f in folders]
            seconds = sum(log.get("seconds") or 0.0 for log in logs)
            tokens = sum(log.get("train_tokens") or 0 for log in logs)
            floors = [log["floor_tokens_per_second"] for log in logs if log.get("floor_tokens_per_second")]
            steps = [log["optimizer_steps"] for log in logs if "optimizer_steps" in log]
            rows.append({"arm": arm, "seed": seed, "adapters": len(folders), "seconds": seconds,
                         "optimizer_steps": sum(steps) if len(steps) == len(logs) else None,
                         "train_tokens": tokens, "tokens_per_second": tokens / seconds if seconds else None,
                         "floor_tokens_per_second": sum(floors) / len(floors) if floors else None,
                         "adapter_mb": sum(folder_mb(f) for f in folders) / len(folders),
                         "device": ", ".join(sorted({log.get("device") or "unrecorded" for log in logs}))})
    return pd.DataFrame(rows, columns=list(COST_COLUMNS))


def time_breakdown(costs, stages):
    """Markdown: each training arm and seed (from its logs), then each evaluation stage, in seconds, and the total.

    stages: {evaluation stage: seconds} in the order they ran.
    """
    def rate(value):
        return "" if value is None or pd.isna(value) else f"{value:.0f}"

    lines = ["| stage | seconds | tokens | tokens/s | floor tokens/s |", "|---|---|---|---|---|"]
    for row in costs.itertuples():
        lines.append(f"| training {row.arm} seed {row.seed} ({row.adapters} adapter{'s' * (row.adapters > 1)}) "
                     f"| {row.seconds:.0f} | {row.train_tokens} | {rate(row.tokens_per_second)} "
                     f"| {rate(row.floor_tokens_per_second)} |")
    for stage, seconds in stages.items():
        lines.append(f"| {stage} | {seconds:.0f} | | | |")
    total = float(costs["seconds"].sum()) + sum(stages.values())
    lines.append(f"| total | {total:.0f} | | | |")
    return "\n".join(lines) + "\n"
