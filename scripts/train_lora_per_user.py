"""Train adapters: LoRA one per persona, one unified for all, or per persona on top of the unified one; prefix tuning
one unified or one per persona.

    python scripts/train_lora_per_user.py --config configs/lora_training.json
        [--scope per_user|all|per_user_on_all|all_on_all|prefix_all|prefix_per_user]
        [--personas p1,p2 | --max_personas N] [--output_dir DIR] [--overwrite]

The base model is loaded once. Each adapter trains on whole train-split dialogues (loss on
assistant tokens), is scored on the val split after every epoch (loss, and the log-probability of
the user's routine values: training.select_by), stops early and keeps the selected epoch, and is saved as a standard PEFT folder (adapter_config.json, adapter_model.safetensors)
plus train_log.json (with the prompt settings it was trained with). Adapters are trained into a
hidden temporary folder and renamed when done, so a rerun skips finished personas and redoes an
interrupted one. A persona that fails is reported and the loop goes on; the exit code is 1 if any
failed.

training.parallel_personas = K > 1 trains K personas' adapters in one batched pass
(adaptcommand/model/multi_lora.py; the per_user and per_user_on_all scopes only: prefix scopes train
one by one); each still gets exactly its own updates and its own folder.
Several processes (`accelerate launch ...` on GPUs, `torchrun --nproc_per_node N ...` on CPU)
split the persona list between them; the summary covers all of them.

training.epochs caps every scope's epochs; training.unified_epochs, if set, caps the unified adapters'
(all, prefix_all) instead; training.unified_batch_size, if set, is the batch of every scope with one adapter
over all personas (all, all_on_all, prefix_all). Every adapter is trained once per seed of training.seeds. Scopes write to
the config's `adapters` section (or --output_dir):
  all              adapters.lora_all             (models/lora_all/seed_<s>/)
  per_user         adapters.lora_per_user        (models/lora_per_user/seed_<s>/<persona_id>/)
  per_user_on_all  adapters.lora_per_user_on_all (models/lora_per_user_on_all/seed_<s>/<persona_id>/),
                   trained on the base model with the unified adapter of the same seed merged in
  all_on_all       adapters.lora_all_on_all      (models/lora_all_on_all/seed_<s>/): the comparator for the
                   scope above, one adapter trained the same way on everyone's dialogues (more training,
                   no per-user memory: design.md, Decision rules)
  prefix_all       adapters.prefix_all           (models/prefix_all/seed_<s>/): PEFT prefix tuning (config
                   section `prefix`: num_virtual_tokens, projection), with the same training core
  prefix_per_user  adapters.prefix_per_user      (models/prefix_per_user/seed_<s>/<persona_id>/)
"""

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from adaptcommand.data.data_io import UserError, load_dialogs, read_json, run_cli, write_csv
from adaptcommand.data.splits import choose_personas, load_splits
from adaptcommand.evaluation.action_metrics import ActionExtractor
from adaptcommand.evaluation.cloze import first_value_spans
from adaptcommand.evaluation.routine_knowledge import message_actions
from adaptcommand.model.adapters import arm_folder, is_complete, jobs_for, merge_unified
from adaptcommand.model.arm_registry import PREFIX, SCOPES, Arm
from adaptcommand.model.config import Config, add_config_arguments, as_dict, load_config, with_values
from adaptcommand.model.modeling import device_name, distributed_state, gather_rows, load_model_and_tokenizer
from adaptcommand.model.multi_lora import train_in_groups
from adaptcommand.model.training import (
    AdapterTrainer,
    forward_backward_rate,
    select_examples,
    tokenized_dialogs,
    training_settings,
)

SUMMARY_FIELDS = ("persona_id", "seed", "status", "train_loss", "val_loss", "val_knowledge", "best_epoch", "epochs_run",
                  "optimizer_steps", "train_tokens", "truncated_examples", "seconds", "error")


def summary_row(job, status, log=None, error=""):
    log = log or {}
    return {"persona_id": job.name, "seed": job.seed, "status": status, "train_loss": log.get("final_train_loss"),
            "val_loss": log.get("best_val_loss"), "val_knowledge": log.get("best_val_knowledge"),
            "best_epoch": log.get("best_epoch"),
            "epochs_run": len(log.get("epochs", [])), "optimizer_steps": log.get("optimizer_steps"),
            "train_tokens": log.get("train_tokens"), "truncated_examples": log.get("truncated_examples"),
            "seconds": log.get("seconds"), "error": error}


def merge_summary(path, rows):
    """Write this run's rows into the summary at `path`, keeping the rows of adapters this run did not
    touch: runs over other --personas, in parallel or one after another, share one summary. A lock file
    keeps two of them from writing it at once. Returns every row of the summary."""
    import csv
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mine = {(str(r["persona_id"]), str(r["seed"])) for r in rows}
        kept = []
        if path.is_file():
            with path.open(newline="", encoding="utf-8") as f:
                kept = [r for r in csv.DictReader(f) if (r.get("persona_id"), r.get("seed")) not in mine]
        write_csv(path, kept + rows, SUMMARY_FIELDS)
    return rows


def val_value_spans(dialogs, splits):
    """{val dialogue index: where its routine values are first stated}: what select_by val_knowledge scores."""
    extract = ActionExtractor().extract_actions
    indices = sorted({i for entry in splits.values() for i in entry["val"]})
    return {i: first_value_spans(dialogs[i], message_actions(dialogs[i], extract)) for i in indices}


@dataclass
class Plan:
    """What a training run will do: the scope's arm and config, and its adapter jobs, split into those to train
    and the summary rows of those already complete."""
    scope: str
    arm: Arm
    cfg: Config
    output_dir: Path
    dialogs: list
    splits: dict
    state: object  # accelerate's PartialState when several processes share the work, else None
    device: str    # where this process trains
    todo: list = field(default_factory=list)
    rows: list = field(default_factory=list)

    @property
    def summary_path(self):
        """A unified adapter's folder holds only its seed folders, so its summary sits beside it, named after it
        (two unified recipes in one folder keep one summary each)."""
        if self.arm.unified:
            return self.output_dir.parent / f"{self.output_dir.name}_training_summary.csv"
        return self.output_dir / "training_summary.csv"


def scope_config(cfg, arm):
    """The config a scope trains with: a unified scope's own epochs cap and batch size where the config sets them."""
    training = cfg.training
    if arm.unified and not arm.on_unified and training.unified_epochs is not None:
        cfg = with_values(cfg, "training", epochs=training.unified_epochs)
    if arm.unified and training.unified_batch_size is not None:
        cfg = with_values(cfg, "training", batch_size=training.unified_batch_size)
    return cfg


def plan_run(args):
    cfg = load_config(args.config, args.set)
    scope = args.scope or cfg.training.scope
    arm = SCOPES[scope]
    cfg = scope_config(cfg, arm)
    output_dir = Path(args.output_dir or cfg.adapters.root(arm.name))
    dialogs = load_dialogs(cfg.data.dialogs)
    splits = load_splits(cfg.data.splits, dialogs)
    personas = choose_personas(splits, args.personas, args.max_personas)
    jobs = jobs_for(arm.name, splits, personas, output_dir, cfg.training.seeds, cfg.training.max_train_sessions)
    state = distributed_state()
    if state is not None:
        if arm.unified:  # one adapter: the main process trains it
            jobs = jobs if state.is_main_process else []
        else:
            with state.split_between_processes(jobs) as mine:
                jobs = list(mine)
        print(f"process {state.process_index}/{state.num_processes}: {len(jobs)} adapter(s)")
    device = str(state.device) if state is not None and cfg.model.device == "auto" else cfg.model.device
    plan = Plan(scope, arm, cfg, output_dir, dialogs, splits, state, device)
    for job in jobs:
        if is_complete(job.folder) and not args.overwrite:
            plan.rows.append(summary_row(job, "skipped (complete)", read_json(job.folder / "train_log.json")))
        else:
            plan.todo.append(job)
    print(f"{scope}: {len(jobs)} adapter(s), {len(plan.rows)} already complete, {len(plan.todo)} to train -> {output_dir}")
    return plan


def report_line(job, log):
    knowledge = log["best_val_knowledge"]
    return (f"{job.name} (seed {job.seed}): kept epoch {log['best_epoch']}/{len(log['epochs'])} "
            f"(by {log['select_by']}), train loss {log['final_train_loss']:.3f}, val loss "
            f"{log['best_val_loss'] or float('nan'):.3f}, val knowledge "
            f"{float('nan') if knowledge is None else knowledge:.3f}, "
            f"{log['train_tokens']} tokens, {log['seconds']:.0f} s "
            f"({log['train_tokens'] / log['seconds']:.0f} tokens/s, floor {log['floor_tokens_per_second'] or 0:.0f})"
            + (f", {log['truncated_examples']} dialogue(s) cut to max_seq_length" if log.get("truncated_examples") else "")
            + (f" ({log['parallel_personas']} trained together)" if "parallel_personas" in log else "")
            + f" -> {job.folder}")


@dataclass
class Outcomes:
    """The summary rows of the adapters a run trains, one reported at a time."""
    rows: list = field(default_factory=list)

    def report(self, job, log, error):
        if error:
            tqdm.write(f"{job.name} (seed {job.seed}): FAILED: {error}")
            self.rows.append(summary_row(job, "failed", error=error))
        else:
            tqdm.write(report_line(job, log))
            self.rows.append(summary_row(job, "trained", log))


def train_seed(plan, model, tokenizer, examples, seed, extra, outcomes):
    """Train the plan's jobs of one seed (on the unified adapter of that seed, merged in, for the scopes on it);
    returns the model to train the next seed on."""
    cfg, jobs = plan.cfg, [job for job in plan.todo if job.seed == seed]
    if plan.arm.on_unified:  # a fresh base with the unified adapter of the same seed merged in
        unified = arm_folder(cfg.adapters, plan.arm.on_unified, seed=seed)
        if seed != plan.todo[0].seed:  # the first seed merges into the base loaded for the run
            model = load_model_and_tokenizer(cfg.model.name, plan.device, cfg.model.dtype)[0]
        model = merge_unified(model, unified)
        extra = {**extra, "on_unified_adapter": str(unified.resolve())}  # load and merge it before this adapter
    if cfg.training.parallel_personas > 1 and not plan.arm.unified and plan.arm.kind != PREFIX:
        return train_in_groups(model, tokenizer, cfg, jobs, examples, extra, outcomes.report)
    trainer = AdapterTrainer(model, tokenizer, cfg, examples, plan.arm.name)
    for job in tqdm(jobs, desc=f"{plan.scope} seed {seed}", unit="adapter"):
        t0 = time.perf_counter()
        try:
            outcomes.report(job, trainer.train(job, extra), "")
        except (UserError, OSError, ValueError, RuntimeError) as err:
            outcomes.report(job, None, f"{err} (after {time.perf_counter() - t0:.0f} s)")
    return model


def train_jobs(plan):
    """Train every job the plan has left; returns their summary rows."""
    cfg, outcomes = plan.cfg, Outcomes()
    model, tokenizer, model_path = load_model_and_tokenizer(cfg.model.name, plan.device, cfg.model.dtype)
    spans = val_value_spans(plan.dialogs, plan.splits) if cfg.training.select_by == "val_knowledge" else None
    examples = tokenized_dialogs(tokenizer, cfg.data.dialogs, cfg.prompt, cfg.training.max_seq_length,
                                 cfg.training.loss_on, spans)
    probe = next((job.train[:1] for job in plan.todo if job.train), None)  # a job with no dialogue fails on its own
    floor = forward_backward_rate(model, select_examples(examples, probe), tokenizer.pad_token_id) if probe else None
    if floor:
        print(f"{device_name(model.device)}: the model's forward+backward runs at {floor:.0f} tokens/s "
              f"(the floor under training's rate)")
    extra = {"base_model": cfg.model.name, "base_model_path": model_path, "scope": plan.scope,
             "prompt": as_dict(cfg.prompt), "training": as_dict(training_settings(cfg, plan.arm.name)),
             **({"prefix": as_dict(cfg.prefix)} if plan.arm.kind == PREFIX else {"lora": as_dict(cfg.lora)}),
             "device": device_name(model.device), "floor_tokens_per_second": floor}
    for seed in dict.fromkeys(job.seed for job in plan.todo):
        model = train_seed(plan, model, tokenizer, examples, seed, {**extra, "seed": seed}, outcomes)
    return outcomes.rows


def write_summary(plan, rows):
    """Merge every process's rows into the scope's summary; the exit code (1 if any adapter failed)."""
    rows = gather_rows(plan.state, rows)
    if rows is None:
        return 0
    rows = merge_summary(plan.summary_path, rows)
    failed = [f"{r['persona_id']} (seed {r['seed']})" for r in rows if r["status"] == "failed"]
    print(f"{sum(r['status'] == 'trained' for r in rows)} trained, "
          f"{sum(r['status'].startswith('skipped') for r in rows)} skipped, {len(failed)} failed; "
          f"summary: {plan.summary_path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--scope", choices=sorted(SCOPES), default=None, help="default: the config's")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--personas", default=None, help="comma-separated persona ids")
    group.add_argument("--max_personas", type=int, default=None, help="the first N personas")
    parser.add_argument("--output_dir", default=None, help="default: the config's adapters section")
    parser.add_argument("--overwrite", action="store_true", help="retrain adapters that are already complete")
    args = parser.parse_args()

    plan = plan_run(args)
    rows = plan.rows + (train_jobs(plan) if plan.todo else [])
    return write_summary(plan, rows)


if __name__ == "__main__":
    run_cli(main)
