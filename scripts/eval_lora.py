"""Evaluate every arm on the test split with the baseline's prompts, generation and metrics.

    python scripts/eval_lora.py --config configs/lora_eval.json [--personas p1,p2] [--output_dir results/lora]

Arms: reference replies with no model (adaptcommand/evaluation/routine_knowledge.py): echo and echo_assistant (what
copying the user's / the assistant's last message scores), rotate_usual (what hedging over the
population's values scores), oracle (perfect memory of the routine), silent, and user_usual /
everyone_usual (the user's / everyone's most frequent train values, compared with each other as a
check of what the metric can see without a model); then baseline, character, retrieval
(prompt-only), lora_all, lora_per_user, lora_per_user_on_all, lora_all_on_all (the unified adapter
trained further the way per-user-on-unified adapters are, on everyone's dialogues: the comparator that
tells more training from per-user memory), the prefix arms, and best_on_val (per persona, the model arm
with the best validation score, reported on test). All
adapters sit in one PEFT model and each generation batch mixes personas and arms, each row with
its own adapter (`adapter_names`), so 200 personas cost about what one adapter costs. Adapters
trained on top of the unified one (per-user-on-unified and the comparator) are served by a second
copy of the base model with the unified adapter merged in. An arm with adapters missing for some personas is evaluated on the
others and the missing personas are reported. Several processes (`accelerate launch` /
`torchrun`) split the personas; the main process gathers the records and writes the outputs.

Writes arm_metrics.json, per_persona.csv, comparison.csv, comparison.md, training_costs.csv and PNG plots,
and prints a time breakdown of the study (training from the adapters' train logs, then each evaluation stage).
"""

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from adaptcommand.data.data_io import load_dialogs, read_json, run_cli, write_csv, write_json, write_text_atomic
from adaptcommand.data.splits import choose_personas, load_splits, split_indices
from adaptcommand.evaluation.arms import (
    best_on_val,
    find_adapters,
    generate_rows,
    generation_rows,
    load_model_groups,
    set_aside,
)
from adaptcommand.evaluation.cloze import cloze_items, habit_values, score_items
from adaptcommand.evaluation.costs import time_breakdown, training_costs
from adaptcommand.evaluation.evaluation import TurnScorer, collect_turns, make_retriever
from adaptcommand.evaluation.plots import arm_comparison, delta_histograms, per_user_vs_unified
from adaptcommand.evaluation.predictions import PredictionStore
from adaptcommand.evaluation.routine_knowledge import HABIT_POLICIES, policy_reply, usual_settings
from adaptcommand.evaluation.tables import (
    arm_table,
    comparison_pairs,
    comparisons,
    csv_rows,
    markdown_tables,
    persona_frame,
    pooled_table,
    seed_frame,
    with_deltas,
)
from adaptcommand.model.adapters import arm_folder, first_sessions
from adaptcommand.model.arm_registry import (
    ARMS,
    BASELINE,
    COMPARATOR,
    PER_USER_LORA,
    REFERENCES,
    UNIFIED,
    arm_prompt,
    comparator_pairs,
    is_policy,
)
from adaptcommand.model.config import Config, add_config_arguments, load_config
from adaptcommand.model.modeling import device_name, distributed_state, gather_rows, load_embedder, pick_device

SECONDARY_METRICS = ("routine_f1", "cloze_top1", "param_f1", "param_private_f1", "embedding_similarity")
PROMPT_KEYS = ("system_template", "max_context_messages", "include_character", "retrieval")


@dataclass
class Evaluation:
    """What every split's evaluation needs: config, data, the loaded models and the scorer."""
    cfg: Config
    dialogs: list
    splits: dict
    groups: list
    scorer: TurnScorer
    retriever: object
    store: PredictionStore

    def actions_of(self, index):
        return self.scorer.dialog_state(self.dialogs, index)[0]

    @cached_property
    def usual(self):
        """usual_settings of every persona's train split: computed once, not per group of personas."""
        return usual_settings(self.dialogs, {p: s["train"] for p, s in self.splits.items()})

    @cached_property
    def habits(self):
        """habit_values of every persona's train split, for the cloze's baselines: computed once."""
        return habit_values(self.dialogs, {p: s["train"] for p, s in self.splits.items()}, self.actions_of)


@dataclass
class Records:
    """What the evaluation of some personas produced: {arm: turn records} per split (train: the memorisation
    check's sessions), cloze results on test and on those train sessions, and {folder: reason} for adapters
    that could not be loaded."""
    test: dict = field(default_factory=dict)
    val: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)
    cloze: list = field(default_factory=list)
    train_cloze: list = field(default_factory=list)
    unusable: dict = field(default_factory=dict)

    def add(self, other):
        for split in ("test", "val", "train"):
            for arm, records in getattr(other, split).items():
                getattr(self, split).setdefault(arm, []).extend(records)
        self.cloze += other.cloze
        self.train_cloze += other.train_cloze
        self.unusable.update(other.unusable)


class Stopwatch:
    """Seconds per named stage, added up over the groups of personas."""

    def __init__(self, start):
        self.stages, self.start, self.clock = {}, start, start

    def lap(self, name):
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + now - self.clock
        self.clock = now


def evaluate_split(ev, split, arms, turns):
    """{arm: turn records} of these turns; adapter arms' records carry their seed."""
    records = {}
    policies = [a for a in arms if is_policy(a)]
    usual = ev.usual if set(HABIT_POLICIES) & set(policies) else None
    for arm in policies:
        replies = [policy_reply(arm, ev.dialogs[t["dialog_index"]], t["turn_index"],
                                ev.scorer.dialog_state(ev.dialogs, t["dialog_index"])[0], usual) for t in turns]
        records[arm] = ev.scorer.score(ev.dialogs, [{**t, "seed": None} for t in turns], replies)
    for group in ev.groups:
        rows = generation_rows(group, [a for a in arms if a in group.arms], turns)
        if not rows:
            continue
        replies = generate_rows(group, rows, turns, ev.dialogs, ev.cfg, ev.retriever, split, ev.store)
        for arm in dict.fromkeys(r.arm for r in rows):
            picked = [i for i, r in enumerate(rows) if r.arm == arm]
            records.setdefault(arm, []).extend(ev.scorer.score(
                ev.dialogs, [{**turns[rows[i].turn], "seed": rows[i].seed} for i in picked], [replies[i] for i in picked]))
    return records


def evaluate_cloze(ev, indices, arms=None):
    """ClozeResults of every model arm (or of `arms`; every seed) on the stated routine values of the dialogues
    {persona: dialogue indices}."""
    items = cloze_items(ev.dialogs, indices, ev.actions_of)
    results, sequences = [], {}  # each item's token ids under each prompt, shared by the arms and seeds
    for group in ev.groups:
        for arm in [a for a in group.arms if arms is None or a in arms]:
            seeds = {s for p in indices for s in group.adapters_for(arm, p)}
            for seed in sorted(seeds, key=lambda s: -1 if s is None else s):
                def adapter_of(persona, arm=arm, seed=seed, group=group):
                    return group.adapters_for(arm, persona).get(seed)
                results += score_items(group.model, group.tokenizer, ev.dialogs, items, arm_prompt(arm, ev.cfg.prompt),
                                       arm, adapter_of, ev.habits, ev.retriever, seed, sequences)
    return results


def routine_train_sessions(dialogs, train, sessions):
    """A persona's last `sessions` train dialogues that follow a routine (the only ones where routine F1 and
    the cloze have anything to score), in recorded order."""
    return [i for i in first_sessions(train) if dialogs[i].get("applied_routines")][-sessions:]


def memorized_arms(arms):
    """The arms the memorisation check runs on train sessions: the baseline and every adapter arm."""
    return [a for a in arms if a == BASELINE.name or ARMS[a].has_adapters]


def persona_groups(personas, size):
    return [personas[start:start + size] for start in range(0, len(personas), size)]


def evaluate_personas(ev, arms, personas, max_examples, watch):
    """Records of every split and check the config asks for, evaluation.persona_group personas at a time: each
    group's adapters are put on the models (ModelGroup.serve), then its test, val, cloze and train turns run."""
    cfg = ev.cfg
    model_arms = [a for a in arms if not is_policy(a)]  # best_on_val never picks a reference reply
    memorized = memorized_arms(arms)
    sessions = cfg.evaluation.train_sessions
    splits = ["test"] + (["val"] if cfg.arms.best_on_val and len(model_arms) > 1 else [])
    turns = {split: collect_turns(ev.dialogs, split_indices(ev.splits, split, personas), max_examples) for split in splits}
    out = Records()
    for group in tqdm(persona_groups(personas, cfg.evaluation.persona_group), desc="persona groups",
                      unit="group", disable=len(personas) <= cfg.evaluation.persona_group):
        here = set(group)
        for model_group in ev.groups:
            out.unusable.update(model_group.serve(group))
        watch.lap("load adapters")
        for split in splits:
            records = evaluate_split(ev, split, arms if split == "test" else model_arms,
                                     [t for t in turns[split] if t["persona_id"] in here])
            out.add(Records(**{split: records}))
            watch.lap(f"replies and scores, {split}")
        if cfg.evaluation.cloze:
            out.cloze += evaluate_cloze(ev, split_indices(ev.splits, "test", group))
            watch.lap("cloze")
        if sessions and memorized:
            indices = {p: routine_train_sessions(ev.dialogs, ev.splits[p]["train"], sessions) for p in group}
            out.add(Records(train=evaluate_split(ev, "train", memorized, collect_turns(ev.dialogs, indices)),
                            train_cloze=evaluate_cloze(ev, indices, memorized) if cfg.evaluation.cloze else []))
            watch.lap("memorization (train sessions)")
    return out


def memorization_rows(arms, records):
    """Routine F1 and cloze top-1 (macro over personas, seeds averaged) of the adapter arms and baseline on each
    persona's last routine-driven train dialogues, beside the same on test: one row per (arm, split), with how
    many personas, turns and cloze items each mean stands on."""
    arms = memorized_arms(arms)
    if not any(records.train.get(a) for a in arms):
        return []
    rows = []
    for split, by_arm, cloze in (("train", records.train, records.train_cloze), ("test", records.test, records.cloze)):
        frame = persona_frame(seed_frame({a: by_arm[a] for a in arms if a in by_arm},
                                         [c for c in cloze if c.arm in arms]))
        for arm, scores in frame.groupby("arm", sort=False):
            items = [c for c in cloze if c.arm == arm]
            seeds = max(1, len({c.seed for c in items}))
            rows.append({"arm": arm, "split": split, "personas": len(scores),
                         "turns": len(by_arm.get(arm, [])) // max(1, len({r["seed"] for r in by_arm.get(arm, [])})),
                         "cloze_items": len(items) // seeds,
                         **{m: scores[m].mean() if m in scores else None for m in ("routine_f1", "cloze_top1")}})
    return rows


def prompt_mismatches(cfg, availability):
    """Warnings for adapters trained with other prompt settings than this evaluation's."""
    wanted = {k: getattr(cfg.prompt, k) for k in PROMPT_KEYS}
    differing = {}
    for found in availability.values():
        for folder in {f for by_seed in found.found.values() for f in by_seed.values()}:  # lora_all: one folder
            trained = read_json(Path(folder) / "train_log.json").get("prompt")
            if trained is None:
                continue
            for key in PROMPT_KEYS:
                if key in trained and trained[key] != wanted[key]:
                    differing.setdefault((key, json.dumps(trained[key])), []).append(str(folder))
    return [f"warning: {len(folders)} adapter(s) trained with prompt.{key}={value}, evaluated with "
            f"{json.dumps(wanted[key])}: {', '.join(sorted(set(folders))[:3])}{', ...' if len(set(folders)) > 3 else ''}"
            for (key, value), folders in differing.items()]


@dataclass
class Plan:
    """Who and what an evaluation covers: the config, data, personas (this process's share: mine), the arms that
    have something to evaluate and every adapter arm's adapters."""
    cfg: Config
    dialogs: list
    splits: dict
    personas: list
    mine: list
    arms: list
    availability: dict
    state: object  # accelerate's PartialState when several processes share the personas, else None
    max_examples: int = None


def plan_evaluation(args):
    cfg = load_config(args.config, args.set)
    dialogs = load_dialogs(cfg.data.dialogs)
    splits = load_splits(cfg.data.splits, dialogs)
    personas = choose_personas(splits, args.personas, args.max_personas)
    state = distributed_state()
    availability = find_adapters(cfg, cfg.arms.names, personas)
    if state is None or state.is_main_process:
        for arm, found in availability.items():
            if found.missing:
                print(f"warning: {arm}: no adapter for {len(found.missing)} of {len(personas)} personas "
                      f"({', '.join(found.missing[:5])}{', ...' if len(found.missing) > 5 else ''}); evaluated on the others")
        for line in prompt_mismatches(cfg, availability):
            print(line)
    arms = [a for a in cfg.arms.names if not ARMS[a].has_adapters or availability[a].found]
    mine = personas
    if state is not None:
        with state.split_between_processes(personas) as shard:
            mine = list(shard)
        print(f"process {state.process_index}/{state.num_processes}: {len(mine)} persona(s)")
    max_examples = args.max_examples if args.max_examples is not None else cfg.evaluation.max_examples
    return Plan(cfg, dialogs, splits, personas, mine, arms, availability, state, max_examples)


def load_evaluation(plan, output_dir, fresh):
    """The Evaluation of a plan: the embedder, the retriever if an arm retrieves, the models and the reply store."""
    cfg = plan.cfg
    embedder = load_embedder(cfg.evaluation.embedding_model)
    retriever = (make_retriever(embedder, plan.dialogs, plan.splits, cfg.prompt.retrieved_history)
                 if any(arm_prompt(a, cfg.prompt).retrieval for a in plan.arms) else None)
    groups = load_model_groups(cfg, plan.arms, plan.availability, plan.mine)
    store = PredictionStore.open(output_dir, fresh, plan.state.process_index if plan.state is not None else None)
    return Evaluation(cfg, plan.dialogs, plan.splits, groups, TurnScorer(embedder), retriever, store)


def gathered_records(plan, records):
    """Every process's records in the main process (None in the others), with the adapters any process found
    unusable set aside."""
    gathered = gather_rows(plan.state, [records])
    if gathered is None:
        return None
    records = Records()
    for part in gathered:
        records.add(part)
    set_aside(plan.availability, records.unusable)
    return records


@dataclass
class Summary:
    """What the records say: the tables, comparisons and costs the outputs are written from."""
    test: dict
    choice: dict
    n_turns: int
    seeds: object
    frame: object
    table: object
    compared: object
    markdown: str
    costs: list
    memorization: list
    unusable: dict


def summarize(plan, records):
    cfg, metric = plan.cfg, plan.cfg.arms.primary_metric
    unusable = {arm: found.unusable for arm, found in plan.availability.items() if found.unusable}
    for arm, folders in unusable.items():
        for folder, reason in folders.items():
            print(f"warning: {arm}: unusable adapter {folder}: {reason}")
    memorization = memorization_rows(plan.arms, records) if cfg.evaluation.train_sessions else []
    if cfg.evaluation.train_sessions and not memorization:
        print("memorization check skipped: no baseline or adapter arm to evaluate on train sessions")
    test = {arm: records.test[arm] for arm in plan.arms if arm in records.test}
    choice = {}
    if records.val:
        choice, test["best_on_val"] = best_on_val(records.val, test, metric, [a for a in plan.arms if not is_policy(a)])
    n_turns = len({(r["dialog_index"], r["turn_index"]) for rows in test.values() for r in rows})
    seeds = seed_frame(test, records.cloze)
    frame = persona_frame(seeds)
    table = arm_table(frame, seeds, metric, cfg.arms.n_bootstrap)
    families = [(comparison_pairs([a for a in test if not is_policy(a) and a != COMPARATOR.name], REFERENCES),
                 SECONDARY_METRICS),
                (comparator_pairs(test), SECONDARY_METRICS),
                ([("user_usual", "everyone_usual")] if {"user_usual", "everyone_usual"} <= set(test) else [], ())]
    compared = pd.concat([comparisons(seeds, pairs, metric, secondary, cfg.arms.n_bootstrap, cfg.arms.min_personas)
                          for pairs, secondary in families])
    return Summary(test, choice, n_turns, seeds, frame, table, compared, markdown_tables(table, compared, metric),
                   training_costs(plan.availability), memorization, unusable)


def write_outputs(plan, records, summary, args, watch):
    """Every table, plot and summary file under --output_dir; the plots' paths."""
    cfg, out, metric = plan.cfg, Path(args.output_dir), plan.cfg.arms.primary_metric
    write_json(out / "arm_metrics.json", {
        "config_file": cfg.source, "config_overrides": args.set, "split": "test", "primary_metric": metric,
        "turns": summary.n_turns,
        "arms": json.loads(summary.table.to_json(orient="index")),
        "comparisons": csv_rows(summary.compared),
        "best_on_val_choice": summary.choice,
        "missing_adapters": {arm: found.missing for arm, found in plan.availability.items() if found.missing},
        "unusable_adapters": summary.unusable,
        "seeds": {arm: found.seeds() for arm, found in plan.availability.items()},
        "adapter_folders": {arm: str(arm_folder(cfg.adapters, arm, "<persona_id>", "<seed>")) for arm in plan.availability},
        "processes": plan.state.num_processes if plan.state else 1, "seconds": time.perf_counter() - watch.start,
        "stage_seconds": watch.stages,
        "device": device_name(cfg.model.device if cfg.model.device != "auto" else pick_device())})
    write_csv(out / "per_persona.csv", csv_rows(with_deltas(summary.frame, REFERENCES, [metric, *SECONDARY_METRICS])))
    write_csv(out / "per_persona_seed.csv", csv_rows(summary.seeds))
    write_csv(out / "comparison.csv", csv_rows(summary.compared))
    write_csv(out / "training_costs.csv", csv_rows(summary.costs))
    if summary.memorization:
        write_csv(out / "memorization.csv", summary.memorization)
    if records.cloze:
        write_csv(out / "cloze_items.csv", [asdict(c) for c in records.cloze])
    write_csv(out / "arm_metrics_pooled.csv", csv_rows(pooled_table(summary.test).reset_index()))
    if records.val:
        write_csv(out / "val_arm_metrics_pooled.csv", csv_rows(pooled_table(records.val).reset_index()))
    write_text_atomic(out / "comparison.md", summary.markdown)
    plots = [delta_histograms(summary.frame, metric, out / "delta_histograms.png"),
             arm_comparison(summary.seeds, SECONDARY_METRICS, out / "arm_comparison.png", cfg.arms.n_bootstrap)]
    if UNIFIED.name in summary.table.index and set(PER_USER_LORA) & set(summary.table.index):
        plots.append(per_user_vs_unified(summary.seeds, metric, out / "per_user_vs_unified.png"))
    return plots


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    who = parser.add_mutually_exclusive_group()
    who.add_argument("--personas", default=None, help="comma-separated persona ids (default: every persona of the split)")
    who.add_argument("--max_personas", type=int, default=None, help="the first N personas")
    parser.add_argument("--output_dir", default="results/lora", help="where the tables, plots and replies go")
    parser.add_argument("--max_examples", type=int, default=None, help="cap on turns per split (default: config)")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore the replies already in <output_dir>/predictions*.jsonl and generate them all again")
    args = parser.parse_args()
    watch = Stopwatch(time.perf_counter())

    plan = plan_evaluation(args)
    ev = load_evaluation(plan, args.output_dir, args.fresh)
    watch.lap("load data and models")

    records = evaluate_personas(ev, plan.arms, plan.mine, plan.max_examples, watch)
    print(ev.store.summary())
    records = gathered_records(plan, records)
    if records is None:
        return 0

    summary = summarize(plan, records)
    watch.lap("statistics")
    plots = write_outputs(plan, records, summary, args, watch)
    print()
    print(summary.markdown)
    print(f"{summary.n_turns} test turns, {summary.frame['persona_id'].nunique()} personas, "
          f"{time.perf_counter() - watch.start:.0f} s; wrote {args.output_dir}/arm_metrics.json, per_persona.csv, "
          f"per_persona_seed.csv, comparison.csv, comparison.md, arm_metrics_pooled.csv"
          + (", cloze_items.csv" if records.cloze else ""))
    print("plots: " + ", ".join(str(p) for p in plots))
    watch.lap("outputs and plots")
    print("\ntime breakdown (training from the adapters' train logs; the model's forward+backward rate is the floor):")
    print(time_breakdown(summary.costs, watch.stages))
    empty = [arm for arm in plan.cfg.arms.names if ARMS[arm].has_adapters and arm not in summary.test]
    if empty:
        print(f"error: no usable adapter at all for {', '.join(empty)} (see the warnings above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    run_cli(main)
