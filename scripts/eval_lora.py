"""Evaluate every arm on the test split with the baseline's prompts, generation and metrics.

    python scripts/eval_lora.py --config configs/lora_eval.json [--personas p1,p2] [--output_dir results/lora]

Arms: baseline, character, retrieval (prompt-only), lora_all, lora_per_user, lora_per_user_on_all,
and best_on_val (per persona, the arm with the best validation score, reported on test). All
adapters sit in one PEFT model and each generation batch mixes personas and arms, each row with
its own adapter (`adapter_names`), so 200 personas cost about what one adapter costs. Per-user
adapters trained on top of the unified one are served by a second copy of the base model with the
unified adapter merged in. An arm with adapters missing for some personas is evaluated on the
others and the missing personas are reported. Several processes (`accelerate launch` /
`torchrun`) split the personas; the main process gathers the records and writes the outputs.

Writes arm_metrics.json, per_persona.csv, comparison.csv, comparison.md and PNG plots.
"""

import argparse
import time
from pathlib import Path

from scripts.config import load_config
from scripts.data_io import (UserError, load_dialogs, load_splits, read_json, run_cli, write_csv, write_json,
                             write_text_atomic)
from scripts.evaluation import (SUMMARY_COLUMNS, TurnScorer, aggregate, aggregate_per_persona, build_prompts,
                                collect_turns, make_retriever, split_indices)
from scripts.generation import generate_texts
from scripts.modeling import distributed_state, load_embedder, load_model_and_tokenizer
from scripts.plots import arm_comparison, delta_histograms, per_user_vs_unified
from scripts.statistics import paired_comparison
from scripts.train_lora_per_user import is_complete

PROMPT_ARMS = ("baseline", "character", "retrieval")
ADAPTER_ARMS = ("lora_all", "lora_per_user", "lora_per_user_on_all")
DELTA_METRICS = ("param_f1", "embedding_similarity")


def prompt_config(arm, cfg):
    prompt = dict(cfg["prompt"])
    if arm == "character":
        prompt["include_character"] = True
    if arm == "retrieval":
        prompt["retrieved_history"] = cfg["arms"]["retrieved_history"]
    return prompt


def adapter_folders(arm, cfg, personas):
    """({persona: adapter folder}, [personas without one]) for an adapter arm."""
    root = Path(cfg["arms"][arm])
    if arm == "lora_all":
        return ({p: root for p in personas}, []) if is_complete(root) else ({}, list(personas))
    found = {p: root / p for p in personas if is_complete(root / p)}
    return found, [p for p in personas if p not in found]


def load_with_adapters(cfg, adapters, merge=None):
    """The base model (optionally with `merge` merged in) holding every adapter in {name: folder}."""
    from peft import PeftModel

    model, tokenizer, _ = load_model_and_tokenizer(cfg["model"]["name"], cfg["model"]["device"], cfg["model"]["dtype"])
    if merge is not None:
        model = PeftModel.from_pretrained(model, merge).merge_and_unload()
    if not adapters:
        return model, tokenizer
    (first, folder), *rest = adapters.items()
    model = PeftModel.from_pretrained(model, folder, adapter_name=first)
    for name, folder in rest:
        model.load_adapter(folder, adapter_name=name)
    return model.eval(), tokenizer


def adapter_name(arm, persona=None):
    """PEFT adapter names: no dots, and never containing 'lora_' (PEFT would re-initialise them)."""
    return {"lora_all": "unified", "lora_per_user": f"user_{persona}", "lora_per_user_on_all": f"onall_{persona}"}[arm]


def plan_rows(arms, cfg, turns, availability):
    """[(arm, turn index, adapter name or '__base__')] for the arms served by the shared model."""
    rows = []
    for arm in arms:
        for k, turn in enumerate(turns):
            persona = turn["persona_id"]
            if arm in PROMPT_ARMS:
                rows.append((arm, k, "__base__"))
            elif persona in availability[arm][0]:
                rows.append((arm, k, adapter_name(arm, persona)))
    return rows


def generate_rows(model, tokenizer, rows, turns, dialogs, cfg, retriever, desc):
    """Predictions for rows, prompts built per arm, one mixed-adapter generation pass."""
    prompts = [None] * len(rows)
    for arm in dict.fromkeys(r[0] for r in rows):
        picked = [i for i, r in enumerate(rows) if r[0] == arm]
        arm_prompts = build_prompts(tokenizer, dialogs, [turns[rows[i][1]] for i in picked],
                                    prompt_config(arm, cfg), retriever)
        for i, prompt in zip(picked, arm_prompts):
            prompts[i] = prompt
    names = [r[2] for r in rows] if hasattr(model, "peft_config") else None
    return generate_texts(model, tokenizer, prompts, cfg["generation"], adapter_names=names, desc=desc)


def evaluate_split(split, arms, cfg, dialogs, splits, personas, models, availability, scorer, retriever, max_examples):
    """({arm: records}, turns) on one split; models: {group: (model, tokenizer, arms it serves)}."""
    turns = collect_turns(dialogs, split_indices(splits, split, personas), max_examples)
    records = {}
    for group, (model, tokenizer, group_arms) in models.items():
        rows = plan_rows([a for a in arms if a in group_arms], cfg, turns, availability)
        if not rows:
            continue
        preds = generate_rows(model, tokenizer, rows, turns, dialogs, cfg, retriever, f"{split} {group}")
        for arm in dict.fromkeys(r[0] for r in rows):
            picked = [i for i, r in enumerate(rows) if r[0] == arm]
            records[arm] = scorer.score(dialogs, [turns[rows[i][1]] for i in picked], [preds[i] for i in picked])
    return records, turns


def best_on_val(val_per_persona, test_records, metric, arms):
    """Per persona, the arm with the best val score (ties: earlier arm); its test records."""
    chosen, records = {}, []
    for persona, by_arm in val_per_persona.items():
        scored = [(by_arm[a].get(metric), -arms.index(a), a) for a in arms
                  if a in by_arm and by_arm[a].get(metric) is not None]
        if not scored:
            continue
        arm = max(scored)[2]
        chosen[persona] = arm
        records += [r for r in test_records[arm] if r["persona_id"] == persona]
    return chosen, records


def comparison_rows(arm_metrics, per_persona, cfg):
    rows = []
    for arm, metrics in arm_metrics.items():
        row = {"arm": arm, **{k: metrics.get(k) for k in SUMMARY_COLUMNS}, "personas": metrics.get("personas")}
        for ref in ("baseline", "lora_all"):
            for metric in DELTA_METRICS:
                if arm == ref or ref not in arm_metrics:
                    continue
                a = {p: m[arm].get(metric) for p, m in per_persona.items() if arm in m}
                b = {p: m[ref].get(metric) for p, m in per_persona.items() if ref in m}
                stats = paired_comparison(a, b, cfg["arms"]["n_bootstrap"], seed=0)
                for key, value in stats.items():
                    row[f"vs_{ref}:{metric}:{key}"] = value
        rows.append(row)
    return rows


def fmt(value, digits=3):
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(rows, metric):
    header = ("| arm | personas | turns | param F1 | device F1 | embedding sim | adherence | "
              f"Δ {metric} vs baseline [95% CI] | helped / hurt | sign p | Δ {metric} vs lora_all [95% CI] |")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        def delta(ref):
            d = r.get(f"vs_{ref}:{metric}:macro_delta")
            if d is None:
                return "–"
            return f"{d:+.3f} [{r[f'vs_{ref}:{metric}:ci_low']:+.3f}, {r[f'vs_{ref}:{metric}:ci_high']:+.3f}]"
        helped = r.get(f"vs_baseline:{metric}:helped")
        hh = "–" if helped is None else f"{helped:.0%} / {r[f'vs_baseline:{metric}:hurt']:.0%}"
        p = r.get(f"vs_baseline:{metric}:sign_test_p")
        lines.append(f"| {r['arm']} | {r['personas']} | {r['turns']} | {fmt(r['param_f1'])} | {fmt(r['device_f1'])} | "
                     f"{fmt(r['embedding_similarity'])} | {fmt(r['adherence_precision'])} | {delta('baseline')} | {hh} | "
                     f"{'–' if p is None else f'{p:.3g}'} | {delta('lora_all')} |")
    return "\n".join(lines) + "\n"


def evaluate_arms(cfg, arms, dialogs, splits, personas, availability, max_examples):
    """({arm: test records}, {arm: val records}, test turns) for these personas."""
    mine = {arm: ({p: f for p, f in found.items() if p in personas}, missing) for arm, (found, missing) in availability.items()}
    shared = {}
    if "lora_all" in arms:
        shared[adapter_name("lora_all")] = cfg["arms"]["lora_all"]
    if "lora_per_user" in arms:
        shared.update({adapter_name("lora_per_user", p): f for p, f in mine["lora_per_user"][0].items()})
    model, tokenizer = load_with_adapters(cfg, shared)
    models = {"shared": (model, tokenizer, [a for a in arms if a != "lora_per_user_on_all"])}
    if "lora_per_user_on_all" in arms and mine["lora_per_user_on_all"][0]:
        on_all = {adapter_name("lora_per_user_on_all", p): f for p, f in mine["lora_per_user_on_all"][0].items()}
        models["on_unified"] = (*load_with_adapters(cfg, on_all, merge=cfg["arms"]["lora_all"]), ["lora_per_user_on_all"])
    embedder = load_embedder(cfg["evaluation"]["embedding_model"])
    scorer = TurnScorer(embedder)
    retriever = make_retriever(embedder, dialogs, splits, cfg["arms"]["retrieved_history"]) if "retrieval" in arms else None
    run = lambda split: evaluate_split(split, arms, cfg, dialogs, splits, personas, models, mine,  # noqa: E731
                                       scorer, retriever, max_examples)
    test_records, turns = run("test")
    val_records = run("val")[0] if cfg["arms"]["best_on_val"] and len(arms) > 1 else {}
    return test_records, val_records, len(turns)


def gather(state, out, part):
    """Every process's records merged on the main process (None elsewhere), through files in `out`."""
    if state is None:
        return part
    write_json(out / f".records.rank{state.process_index}.json", part)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    merged = {"test": {}, "val": {}, "turns": 0}
    for rank in range(state.num_processes):
        path = out / f".records.rank{rank}.json"
        piece = read_json(path)
        path.unlink()
        merged["turns"] += piece["turns"]
        for split in ("test", "val"):
            for arm, records in piece[split].items():
                merged[split].setdefault(arm, []).extend(records)
    return merged


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--personas", default=None)
    parser.add_argument("--output_dir", default="results/lora")
    parser.add_argument("--max_examples", type=int, default=None, help="cap on turns per split (default: config)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    t0 = time.perf_counter()
    dialogs = load_dialogs(cfg["data"]["dialogs"])
    splits = load_splits(cfg["data"]["splits"])
    personas = [p.strip() for p in args.personas.split(",")] if args.personas else sorted(splits["per_persona"])
    split_indices(splits, "test", personas)  # validates the persona ids
    max_examples = args.max_examples if args.max_examples is not None else cfg["evaluation"]["max_examples"]
    arms = list(cfg["arms"]["names"])
    unknown = [a for a in arms if a not in PROMPT_ARMS + ADAPTER_ARMS]
    if unknown:
        raise UserError(f"{cfg['_source']}: arms.names has unknown arm(s) {unknown}; known: {PROMPT_ARMS + ADAPTER_ARMS}")

    availability = {arm: adapter_folders(arm, cfg, personas) for arm in ADAPTER_ARMS if arm in arms}
    if "lora_per_user_on_all" in availability and not is_complete(cfg["arms"]["lora_all"]):
        availability["lora_per_user_on_all"] = ({}, list(personas))
    state = distributed_state()
    if state is None or state.is_main_process:
        for arm, (found, missing) in availability.items():
            if missing:
                print(f"warning: {arm}: no adapter for {len(missing)} of {len(personas)} personas "
                      f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); evaluated on the others")
    arms = [a for a in arms if a in PROMPT_ARMS or availability[a][0]]
    mine = personas
    if state is not None:
        with state.split_between_processes(personas) as shard:
            mine = list(shard)
        print(f"process {state.process_index}/{state.num_processes}: {len(mine)} persona(s)")

    out = Path(args.output_dir)
    test_records, val_records, n_turns = evaluate_arms(cfg, arms, dialogs, splits, mine, availability, max_examples)
    merged = gather(state, out, {"test": test_records, "val": val_records, "turns": n_turns})
    if merged is None:
        return 0
    test_records, val_records, n_turns = merged["test"], merged["val"], merged["turns"]
    metric = cfg["arms"]["primary_metric"]
    val_metrics, chosen = {}, {}
    if val_records:
        val_per_persona = {}
        for arm, recs in val_records.items():
            val_metrics[arm] = aggregate(recs)
            for persona, m in aggregate_per_persona(recs).items():
                val_per_persona.setdefault(persona, {})[arm] = m
        chosen, test_records["best_on_val"] = best_on_val(val_per_persona, test_records, metric, arms)

    arm_metrics = {arm: aggregate(recs) for arm, recs in test_records.items()}
    per_persona = {}
    for arm, recs in test_records.items():
        for persona, m in aggregate_per_persona(recs).items():
            per_persona.setdefault(persona, {})[arm] = m
    rows = comparison_rows(arm_metrics, per_persona, cfg)

    write_json(out / "arm_metrics.json", {
        "config_file": cfg["_source"], "split": "test", "turns": n_turns, "primary_metric": metric,
        "arms": arm_metrics, "val_arms": val_metrics, "best_on_val_choice": chosen,
        "missing_adapters": {arm: missing for arm, (_, missing) in availability.items() if missing},
        "processes": state.num_processes if state else 1, "seconds": time.perf_counter() - t0})
    long_rows = []
    for persona, by_arm in sorted(per_persona.items()):
        for arm, m in by_arm.items():
            row = {"persona_id": persona, "arm": arm, **{k: m.get(k) for k in SUMMARY_COLUMNS}}
            for ref in ("baseline", "lora_all"):
                for dm in DELTA_METRICS:
                    ok = ref in by_arm and m.get(dm) is not None and by_arm[ref].get(dm) is not None
                    row[f"delta_vs_{ref}_{dm}"] = m[dm] - by_arm[ref][dm] if ok else None
            long_rows.append(row)
    write_csv(out / "per_persona.csv", long_rows)
    write_csv(out / "comparison.csv", rows)
    table = markdown_table(rows, metric)
    write_text_atomic(out / "comparison.md", table)
    plots = [delta_histograms(per_persona, list(arm_metrics), metric, out / "delta_histograms.png"),
             arm_comparison(arm_metrics, ["param_f1", "device_f1", "embedding_similarity"], out / "arm_comparison.png")]
    if "lora_all" in arm_metrics and ({"lora_per_user", "lora_per_user_on_all"} & set(arm_metrics)):
        plots.append(per_user_vs_unified(per_persona, metric, out / "per_user_vs_unified.png"))
    print()
    print(table)
    print(f"{n_turns} test turns, {len(per_persona)} personas, {time.perf_counter() - t0:.0f} s; "
          f"wrote {out}/arm_metrics.json, per_persona.csv, comparison.csv, comparison.md")
    print("plots: " + ", ".join(str(p) for p in plots))
    return 0


if __name__ == "__main__":
    run_cli(main)
