"""Train LoRA adapters: one per persona, one unified for all, or per persona on top of the unified one.

    python scripts/train_lora_per_user.py --config configs/lora_training.json [--scope per_user|all|per_user_on_all]
        [--personas p1,p2 | --max_personas N] [--output_dir DIR] [--overwrite]

The base model is loaded once. Each adapter trains on whole train-split dialogues (loss on
assistant tokens), is scored on the val split after every epoch, stops early and keeps its best
epoch, and is saved as a standard PEFT folder (adapter_config.json, adapter_model.safetensors)
plus train_log.json. Adapters are trained into a hidden temporary folder and renamed when done, so
a rerun skips finished personas and redoes an interrupted one. A persona that fails is reported
and the loop goes on; the exit code is 1 if any failed.

training.parallel_personas = K > 1 trains K personas' adapters in one batched pass
(scripts/multi_lora.py); each still gets exactly its own updates and its own folder.
Several processes (`accelerate launch ...` on GPUs, `torchrun --nproc_per_node N ...` on CPU)
split the persona list between them; the summary covers all of them.

Scopes and default output folders:
  per_user         models/lora_per_user/<persona_id>/
  all              training.unified_adapter (models/lora_all/)
  per_user_on_all  models/lora_per_user_on_all/<persona_id>/ (trained on base + merged unified adapter)
"""

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from scripts.config import load_config
from scripts.data_io import UserError, load_dialogs, load_splits, read_json, run_cli, write_csv, write_json
from scripts.modeling import distributed_state, load_model_and_tokenizer
from scripts.training import dialog_example, train_adapter

DEFAULT_OUTPUT = {"per_user": "models/lora_per_user", "all": "models/lora_all",
                  "per_user_on_all": "models/lora_per_user_on_all"}
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "train_log.json")
SUMMARY_FIELDS = ("persona_id", "status", "train_loss", "val_loss", "best_epoch", "epochs_run", "train_tokens",
                  "seconds", "error")


def is_complete(folder):
    return all((Path(folder) / name).is_file() for name in ADAPTER_FILES)


def lora_config(cfg):
    from peft import LoraConfig

    return LoraConfig(r=cfg["r"], lora_alpha=cfg["alpha"], lora_dropout=cfg["dropout"],
                      target_modules=list(cfg["target_modules"]), bias="none", task_type="CAUSAL_LM")


def examples_for(tokenizer, dialogs, indices, cfg):
    return [dialog_example(tokenizer, dialogs[i], cfg["prompt"], cfg["training"]["max_seq_length"]) for i in indices]


def merge_unified(model, unified_dir):
    """The base model with the unified adapter merged in (per_user_on_all trains on top of it)."""
    from peft import PeftModel

    if not is_complete(unified_dir):
        raise UserError(f"{unified_dir}: no finished unified adapter; train it first with --scope all")
    return PeftModel.from_pretrained(model, unified_dir).merge_and_unload()


def save_adapter(peft_model, adapter_name, folder, log):
    """Write the adapter and its log into a temporary folder, then rename it into place."""
    folder = Path(folder)
    staging = folder.parent / f".{folder.name}.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    peft_model.save_pretrained(staging, selected_adapters=[adapter_name])
    saved = staging / adapter_name if adapter_name != "default" else staging
    write_json(saved / "train_log.json", log)
    shutil.rmtree(folder, ignore_errors=True)
    saved.rename(folder)
    shutil.rmtree(staging, ignore_errors=True)


class AdapterTrainer:
    """Holds the base model once and trains a fresh adapter for each job."""

    def __init__(self, model, tokenizer, cfg):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.peft_model = None

    def train(self, name, train_ix, val_ix, dialogs, folder, extra_log):
        if not train_ix:
            raise UserError("no train dialogues")
        train_examples = examples_for(self.tokenizer, dialogs, train_ix, self.cfg)
        val_examples = examples_for(self.tokenizer, dialogs, val_ix, self.cfg)
        adapter = self.fresh_adapter(f"job_{name}")
        try:
            log = train_adapter(self.peft_model, train_examples, val_examples, self.cfg["training"],
                                self.tokenizer.pad_token_id, desc=name)
            log.update(extra_log, persona_id=name, lora=self.cfg["lora"], training=dict(self.cfg["training"]))
            save_adapter(self.peft_model, adapter, folder, log)
        finally:
            self.release(adapter)
        return log

    def fresh_adapter(self, adapter):
        """A new active LoRA adapter, initialised from the configured seed (same persona, same start)."""
        from peft import get_peft_model

        torch.manual_seed(self.cfg["training"]["seed"])
        if self.peft_model is None:
            self.peft_model = get_peft_model(self.model, lora_config(self.cfg["lora"]), adapter_name=adapter)
        else:
            self.peft_model.add_adapter(adapter, lora_config(self.cfg["lora"]))
            self.peft_model.set_adapter(adapter)
        return adapter

    def release(self, adapter):
        """Drop a finished adapter (PEFT keeps the last one: a model needs at least one)."""
        if len(self.peft_model.peft_config) > 1:
            self.peft_model.delete_adapter(adapter)


def train_in_groups(model, tokenizer, cfg, jobs, dialogs, extra):
    """Train jobs K at a time with the stacked multi-adapter trainer; returns summary rows."""
    from scripts.multi_lora import export_adapters, train_group

    k, rows, lora = cfg["training"]["parallel_personas"], [], lora_config(cfg["lora"])
    ready = []
    for job in jobs:
        if job[1]:
            ready.append(job)
        else:
            tqdm.write(f"{job[0]}: FAILED: no train dialogues")
            rows.append(summary_row(job[0], "failed", error="no train dialogues"))
    for start in tqdm(range(0, len(ready), k), desc=f"groups of {k}", unit="group"):
        group = ready[start:start + k]
        names = [job[0] for job in group]
        try:
            train_sets = [examples_for(tokenizer, dialogs, job[1], cfg) for job in group]
            val_sets = [examples_for(tokenizer, dialogs, job[2], cfg) for job in group]
            model, states, logs = train_group(model, lora, cfg, train_sets, val_sets, tokenizer.pad_token_id)
            for name, log in zip(names, logs):
                log.update(extra, persona_id=name, lora=cfg["lora"], training=dict(cfg["training"]))
            model = export_adapters(model, lora, states, [job[3] for job in group], logs, save_adapter)
        except (ValueError, RuntimeError) as err:
            tqdm.write(f"{', '.join(names)}: FAILED: {err}")
            rows += [summary_row(name, "failed", error=str(err)) for name in names]
            continue
        for name, log, job in zip(names, logs, group):
            tqdm.write(f"{name}: best epoch {log['best_epoch']}/{len(log['epochs'])}, val loss "
                       f"{log['best_val_loss'] or float('nan'):.3f} ({len(group)} trained together) -> {job[3]}")
            rows.append(summary_row(name, "trained", log))
    return rows


def write_summary(path, rows, state):
    """One CSV for the run; with several processes each writes its part and the main one merges."""
    if state is None:
        write_csv(path, rows, SUMMARY_FIELDS)
        return
    part = path.with_name(f"{path.stem}.rank{state.process_index}.csv")
    write_csv(part, rows, SUMMARY_FIELDS)
    state.wait_for_everyone()
    if state.is_main_process:
        import csv

        parts = [path.with_name(f"{path.stem}.rank{r}.csv") for r in range(state.num_processes)]
        merged = [row for p in parts for row in csv.DictReader(p.open())]
        write_csv(path, merged, SUMMARY_FIELDS)
        for p in parts:
            p.unlink()


def summary_row(name, status, log=None, error=""):
    log = log or {}
    return {"persona_id": name, "status": status, "train_loss": log.get("final_train_loss"),
            "val_loss": log.get("best_val_loss"), "best_epoch": log.get("best_epoch"),
            "epochs_run": len(log.get("epochs", [])), "train_tokens": log.get("train_tokens"),
            "seconds": log.get("seconds"), "error": error}


def jobs_for(scope, splits, personas, output_dir):
    """[(name, train indices, val indices, folder)] for the scope."""
    per_persona = splits["per_persona"]
    if scope == "all":
        return [("all", [i for p in personas for i in per_persona[p]["train"]],
                 [i for p in personas for i in per_persona[p]["val"]], Path(output_dir))]
    return [(p, per_persona[p]["train"], per_persona[p]["val"], Path(output_dir) / p) for p in personas]


def choose_personas(splits, personas_arg, max_personas):
    known = sorted(splits["per_persona"])
    if personas_arg:
        chosen = [p.strip() for p in personas_arg.split(",") if p.strip()]
        unknown = [p for p in chosen if p not in splits["per_persona"]]
        if unknown:
            raise UserError(f"unknown persona(s): {', '.join(unknown)}")
        return chosen
    return known[:max_personas] if max_personas else known


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--scope", choices=sorted(DEFAULT_OUTPUT), default=None, help="default: the config's")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--personas", default=None, help="comma-separated persona ids")
    group.add_argument("--max_personas", type=int, default=None, help="the first N personas")
    parser.add_argument("--output_dir", default=None)
    parser.add_argument("--overwrite", action="store_true", help="retrain adapters that are already complete")
    args = parser.parse_args()
    cfg = load_config(args.config)
    scope = args.scope or cfg["training"]["scope"]
    default_output = cfg["training"]["unified_adapter"] if scope == "all" else DEFAULT_OUTPUT[scope]
    output_dir = Path(args.output_dir or cfg["training"]["output_dir"] or default_output)
    dialogs = load_dialogs(cfg["data"]["dialogs"])
    splits = load_splits(cfg["data"]["splits"])
    personas = choose_personas(splits, args.personas, args.max_personas)
    jobs = jobs_for(scope, splits, personas, output_dir)
    state = distributed_state()
    if state is not None:
        if scope == "all":  # one adapter: the main process trains it
            jobs = jobs if state.is_main_process else []
        else:
            with state.split_between_processes(jobs) as mine:
                jobs = list(mine)
        print(f"process {state.process_index}/{state.num_processes}: {len(jobs)} adapter(s)")

    rows, todo = [], []
    for job in jobs:
        if is_complete(job[3]) and not args.overwrite:
            rows.append(summary_row(job[0], "skipped (complete)", read_json(job[3] / "train_log.json")))
        else:
            todo.append(job)
    print(f"{scope}: {len(jobs)} adapter(s), {len(jobs) - len(todo)} already complete, {len(todo)} to train -> {output_dir}")
    if todo:
        device = str(state.device) if state is not None and cfg["model"]["device"] == "auto" else cfg["model"]["device"]
        model, tokenizer, model_path = load_model_and_tokenizer(cfg["model"]["name"], device, cfg["model"]["dtype"])
        extra = {"base_model": cfg["model"]["name"], "base_model_path": model_path, "scope": scope}
        if scope == "per_user_on_all":
            unified = cfg["training"]["unified_adapter"]
            model = merge_unified(model, unified)
            extra["on_unified_adapter"] = str(Path(unified).resolve())  # load and merge it before this adapter
        if cfg["training"]["parallel_personas"] > 1 and scope != "all":
            rows += train_in_groups(model, tokenizer, cfg, todo, dialogs, extra)
            todo = []
        trainer = AdapterTrainer(model, tokenizer, cfg)
        for name, train_ix, val_ix, folder in tqdm(todo, desc=scope, unit="adapter", disable=not todo):
            t0 = time.perf_counter()
            try:
                log = trainer.train(name, train_ix, val_ix, dialogs, folder, extra)
            except (UserError, ValueError, RuntimeError) as err:
                tqdm.write(f"{name}: FAILED after {time.perf_counter() - t0:.0f} s: {err}")
                rows.append(summary_row(name, "failed", error=str(err)))
                continue
            tqdm.write(f"{name}: best epoch {log['best_epoch']}/{len(log['epochs'])}, "
                       f"train loss {log['final_train_loss']:.3f}, val loss {log['best_val_loss'] or float('nan'):.3f}, "
                       f"{log['train_tokens']} tokens, {log['seconds']:.0f} s -> {folder}")
            rows.append(summary_row(name, "trained", log))
    summary = output_dir / "training_summary.csv" if scope != "all" else output_dir.parent / "lora_all_training_summary.csv"
    write_summary(summary, rows, state)
    failed = [r["persona_id"] for r in rows if r["status"] == "failed"]
    print(f"{sum(r['status'] == 'trained' for r in rows)} trained, "
          f"{sum(r['status'].startswith('skipped') for r in rows)} skipped, {len(failed)} failed; summary: {summary}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
