"""A full-size rehearsal of the real study on a model that computes almost nothing.

    .venv/bin/python benchmarks/rehearsal.py --personas 200            # `make rehearsal REHEARSAL_PERSONAS=200`
    .venv/bin/python benchmarks/rehearsal.py --personas 25 --full      # the real configs' seeds, epochs, generation
    .venv/bin/python benchmarks/rehearsal.py --table 25 50 200          # the scaling table of finished runs

Every stage of the real study, with the real configs (configs/lora_training.json, configs/lora_eval.json):
demo data in the real raw format (--personas x --sessions, seed 0), clean, split, every training scope
in order (all, per_user, per_user_on_all, all_on_all, prefix_all, prefix_per_user), eval_lora.py with
best-on-val and the cloze over every arm, then analyze_results.py. The model is a random one with
Qwen2.5-0.5B-Instruct's layout (24 layers, the 7 LoRA projections) but 64 wide
(modeling.build_layout_model), on the CPU in float32: what a stage costs is then the pipeline's own
bookkeeping, which is what must stay flat per user as the study grows.

By default the run is shortened so that 200 users can finish on 2 cores in under an hour (the model's
24 layers and 49,152-word vocabulary are not free even 64 wide): 12 sessions per persona instead of 50
(8 train, 2 val, 2 test), each adapter trained on its persona's first 3 train dialogues
(training.max_train_sessions), one training seed, one epoch, 8 new tokens per reply (a random model
never stops early). Every arm, the best-on-val replies and the cloze stay. What must stay flat is the
cost per user, which these settings scale by a constant. --full keeps 50 sessions and the real configs' seeds, epochs,
training data and 128 new tokens. Per stage it prints wall seconds, seconds per user, the stage's peak resident
memory and the adapters on disk, and per training stage the seconds per adapter spent outside its
adapters' optimizer steps and validation passes (the stage's wall time less its adapters' train logs); the
table goes to results/rehearsal/<personas>/rehearsal.json too.
Each stage runs in its own process, alone: nothing else should use the cores meanwhile. Each stage's
output (the evaluation's time breakdown among it) is kept in results/rehearsal/<personas>_logs/.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCOPES = ("all", "per_user", "per_user_on_all", "all_on_all", "prefix_all", "prefix_per_user")
ARMS = {"all": "lora_all", "per_user": "lora_per_user", "per_user_on_all": "lora_per_user_on_all",
        "all_on_all": "lora_all_on_all", "prefix_all": "prefix_all", "prefix_per_user": "prefix_per_user"}


def run_stage(name, command, users, models, logs):
    """Run one stage as its own process, its output into logs/<stage>.log; returns its row (wall s, s per
    user, peak RSS of that process)."""
    t0 = time.perf_counter()
    process = subprocess.Popen([sys.executable, *map(str, command)], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines = list(process.stdout)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    adapters = sum(1 for _ in Path(models).rglob("adapter_model.safetensors")) if Path(models).is_dir() else 0
    row = {"stage": name, "seconds": round(seconds, 1), "seconds_per_user": round(seconds / users, 3),
           "peak_rss_mb": round(usage.ru_maxrss / 1024), "adapters_on_disk": adapters, "exit": code}
    print(f"{name:<28} {seconds:8.1f} s  {seconds / users:7.3f} s/user  {row['peak_rss_mb']:6d} MB peak  "
          f"{adapters:5d} adapters  exit {code}", flush=True)
    logs.mkdir(parents=True, exist_ok=True)
    (logs / f"{name.replace(' ', '_')}.log").write_text("".join(lines))
    if code != 0:
        print("".join(lines[-30:]), file=sys.stderr)
    return row


def fixed_cost(row, arm_folder):
    """A training stage's adapters trained, and the seconds per adapter it spent outside their optimizer steps and
    validation passes (process start, model loading, tokenization, wrapping, writing folders): the stage's wall
    time less what the adapters' train logs time (a stacked slot logs its share of its group's), over the
    adapters; None where the folder has no train log."""
    logs = [json.loads(path.read_text()) for path in Path(arm_folder).rglob("train_log.json")]
    outside = (row["seconds"] - sum(log["seconds"] for log in logs)) / len(logs) if logs else None
    return {"adapters_trained": len(logs), "outside_s_per_adapter": None if outside is None else round(outside, 3)}


def add_fixed_costs(rows, models):
    """Each training stage's row gets its `fixed_cost` from its arm's folder under `models`, unless it has one."""
    for scope in SCOPES:
        row = next(r for r in rows if r["stage"] == f"train {scope}")
        if "outside_s_per_adapter" not in row:
            row.update(fixed_cost(row, models / ARMS[scope]))


def fixed_cost_table(runs):
    """Markdown: each per-user training stage's adapters and seconds per adapter outside its training steps
    (`fixed_cost`), at each size of `runs`."""
    sizes = [run["personas"] for run in runs]
    by_size = [{row["stage"]: row for row in run["stages"]} for run in runs]
    stages = [f"train {scope}" for scope in SCOPES if "per_user" in scope]
    head = ["stage"] + [f"{n}: adapters" for n in sizes] + [f"{n}: s per adapter outside training" for n in sizes]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage in stages:
        rows = [rows_of.get(stage, {}) for rows_of in by_size]
        cells = [str(r.get("adapters_trained", "")) for r in rows]
        cells += ["" if r.get("outside_s_per_adapter") is None else f"{r['outside_s_per_adapter']:.3f}" for r in rows]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scaling_table(runs):
    """Markdown: each stage's seconds per user and peak memory at each size of `runs` (rehearsal.json contents,
    smallest first), and each against the smallest. The data, clean and split stages (under a second) are
    left out."""
    first, sizes = runs[0], [run["personas"] for run in runs]
    stages = [row["stage"] for row in first["stages"] if row["stage"] not in ("model", "data", "clean", "split")]
    by_size = [{row["stage"]: row for row in run["stages"]} for run in runs]
    head = ["stage"] + [f"{n}: s/user" for n in sizes] + [f"{n}: peak MB" for n in sizes]
    head += [f"s/user {n} vs {sizes[0]}" for n in sizes[1:]] + [f"peak {n} vs {sizes[0]}" for n in sizes[1:]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for stage in stages:
        rows = [rows_of[stage] for rows_of in by_size]
        cells = [f"{r['seconds_per_user']:.3f}" for r in rows] + [str(r["peak_rss_mb"]) for r in rows]
        cells += [f"{r['seconds_per_user'] / rows[0]['seconds_per_user']:.2f}x" for r in rows[1:]]
        cells += [f"{r['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}x" for r in rows[1:]]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    per_user = [run["seconds"] / run["personas"] for run in runs]
    cells = [f"{x:.2f}" for x in per_user] + [""] * len(runs) + [f"{x / per_user[0]:.2f}x" for x in per_user[1:]]
    lines.append("| all stages | " + " | ".join(cells + [""] * (len(runs) - 1)) + " |")
    lines.append("| minutes in all | " + " | ".join([f"{run['seconds'] / 60:.1f}" for run in runs]
                                                    + [""] * (len(head) - 1 - len(runs))) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--personas", type=int, default=200)
    parser.add_argument("--sessions", type=int, default=None, help="sessions per persona (default: 12; --full: 50)")
    parser.add_argument("--full", action="store_true", help="the real configs' seeds, epochs and new tokens")
    parser.add_argument("--table", type=int, nargs="+", metavar="PERSONAS",
                        help="print the scaling table of finished runs at these sizes (their rehearsal.json) and stop")
    args = parser.parse_args()
    if args.table:
        suffix = "_full" if args.full else ""
        runs = [json.loads((ROOT / "results" / "rehearsal" / f"{n}{suffix}" / "rehearsal.json").read_text())
                for n in sorted(args.table)]
        for run in runs:  # runs from before the fixed cost was recorded: from their adapters' folders, if kept
            add_fixed_costs(run["stages"], ROOT / "models" / "rehearsal" / f"{run['personas']}{suffix}")
        print(scaling_table(runs))
        print()
        print(fixed_cost_table(runs))
        return 0
    args.sessions = args.sessions or (50 if args.full else 12)
    name = f"rehearsal/{args.personas}" + ("_full" if args.full else "")
    data, models, results = (ROOT / kind / name for kind in ("data", "models", "results"))
    model_dir = ROOT / "models" / "rehearsal" / "layout_qwen2.5-0.5b_w64"
    for folder in (data, models, results, results.parent / f"{results.name}_logs"):  # every stage is timed from scratch: nothing is skipped as complete
        shutil.rmtree(folder, ignore_errors=True)
    common = ["--set", f"model.name={model_dir}", "--set", "model.device=cpu", "--set", "model.dtype=float32",
              "--set", f"data.dialogs={data}/cleaned/dialogs_clean.jsonl",
              "--set", f"data.splits={data}/splits/edgesplits.json",
              *[x for scope in SCOPES for x in ("--set", f"adapters.{ARMS[scope]}={models}/{ARMS[scope]}")]]
    short_training = [] if args.full else ["--set", "training.seeds=[0]", "--set", "training.epochs=1",
                                          "--set", "training.unified_epochs=1", "--set", "training.max_train_sessions=3"]
    short_eval = [] if args.full else ["--set", "generation.max_new_tokens=8"]
    users = args.personas
    print(f"rehearsal: {users} personas x {args.sessions} sessions, "
          f"{'full settings' if args.full else '3 train dialogues per adapter, one seed, one epoch, 8 new tokens'}; "
          f"model {model_dir}", flush=True)
    build = f"from adaptcommand.model.modeling import build_layout_model; build_layout_model({str(model_dir)!r})"
    stages = [
        # its own process, like every stage: this one's memory must not count in the others' peaks
        *([("model", ["-c", build])] if not (model_dir / "config.json").is_file() else []),
        ("data", ["scripts/make_demo_data.py", "--out_dir", data / "raw", "--personas", users,
                  "--sessions", args.sessions, "--seed", 0]),
        ("clean", ["scripts/clean_data.py", "--raw_dir", data / "raw", "--output", data / "cleaned/dialogs_clean.jsonl"]),
        ("split", ["scripts/create_splits.py", "--input", data / "cleaned/dialogs_clean.jsonl",
                   "--output", data / "splits/edgesplits.json"]),
        *[(f"train {scope}", ["scripts/train_lora_per_user.py", "--config", "configs/lora_training.json",
                              "--scope", scope, *common, *short_training]) for scope in SCOPES],
        ("evaluate", ["scripts/eval_lora.py", "--config", "configs/lora_eval.json", "--output_dir", results,
                      *common, *short_eval]),
        ("analyse", ["scripts/analyze_results.py", "--results", results, *common,
                     "--label", f"rehearsal on random-model replies ({users} synthetic personas)"]),
    ]
    rows = [run_stage(stage, command, users, models, results.parent / f"{results.name}_logs") for stage, command in stages]
    add_fixed_costs(rows, models)  # each training stage's cost per adapter outside its optimizer steps and validation
    for row in rows:
        if "adapters_trained" in row:
            print(f"{row['stage']:<28} {row['outside_s_per_adapter']} s per adapter outside its training steps "
                  f"({row['adapters_trained']} adapters)")
    total = sum(r["seconds"] for r in rows)
    results.mkdir(parents=True, exist_ok=True)
    (results / "rehearsal.json").write_text(json.dumps(
        {"personas": users, "sessions": args.sessions, "full": args.full, "stages": rows, "seconds": total,
         "date": time.strftime("%Y-%m-%d")}, indent=1))
    failed = [r["stage"] for r in rows if r["exit"] != 0]
    print(f"wrote {results / 'rehearsal.json'}" + (f"; FAILED stages: {', '.join(failed)}" if failed else ""))
    print(f"rehearsal: {users} users, {total:.0f} s in all, {total / users:.2f} s per user")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
