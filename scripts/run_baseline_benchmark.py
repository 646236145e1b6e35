"""Prompt-only baseline: generate every assistant turn of a split and score it.

    python scripts/run_baseline_benchmark.py --config configs/baseline_v1.0.json --max_examples 50 \
        --output_dir results/baseline_quick [--personas persona_000,persona_003]

Writes baseline_results.json (config, metrics, counts, model, device, timings),
per_persona_results.json, per_persona_summary.csv and sample_outputs.jsonl to --output_dir, and
checkpoints the replies in predictions.jsonl there: a rerun reuses them (--fresh: not).
The config's prompt switches (include_character, retrieval) give the prompt arms.
"""

import argparse
import time
from pathlib import Path

from adaptcommand.data.data_io import load_dialogs, run_cli, write_csv, write_json, write_jsonl
from adaptcommand.data.splits import choose_personas, load_splits, split_indices
from adaptcommand.evaluation.evaluation import (
    TurnScorer,
    aggregate,
    aggregate_per_persona,
    build_prompts,
    collect_turns,
    format_metrics,
    make_retriever,
    sample_record,
    summary_rows,
)
from adaptcommand.evaluation.predictions import PredictionStore, generate_or_reuse
from adaptcommand.model.config import add_config_arguments, as_dict, load_config
from adaptcommand.model.modeling import load_embedder, load_model_and_tokenizer


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    parser.add_argument("--output_dir", default="results/baseline", help="where the results and replies go")
    parser.add_argument("--max_examples", type=int, default=None, help="cap on assistant turns (default: config)")
    parser.add_argument("--personas", default=None, help="comma-separated persona ids (default: all)")
    parser.add_argument("--fresh", action="store_true",
                        help="ignore the replies already in <output_dir>/predictions.jsonl and generate them all again")
    args = parser.parse_args()
    cfg = load_config(args.config, args.set)
    max_examples = args.max_examples if args.max_examples is not None else cfg.evaluation.max_examples
    timings, t0 = {}, time.perf_counter()

    dialogs = load_dialogs(cfg.data.dialogs)
    splits = load_splits(cfg.data.splits, dialogs)
    indices = split_indices(splits, cfg.data.split, choose_personas(splits, args.personas))
    turns = collect_turns(dialogs, indices, max_examples)
    print(f"{len(turns)} assistant turns from {len({t['dialog_index'] for t in turns})} {cfg.data.split} dialogues")

    model, tokenizer, model_path = load_model_and_tokenizer(cfg.model.name, cfg.model.device, cfg.model.dtype)
    embedder = load_embedder(cfg.evaluation.embedding_model)
    timings["load_s"] = time.perf_counter() - t0

    retriever = make_retriever(embedder, dialogs, splits, cfg.prompt.retrieved_history)
    prompts = build_prompts(tokenizer, dialogs, turns, cfg.prompt, retriever)
    t1 = time.perf_counter()
    store = PredictionStore.open(args.output_dir, args.fresh)
    keys = [{"split": cfg.data.split, "arm": "baseline", "seed": None, "persona_id": t["persona_id"],
             "dialog_index": t["dialog_index"], "turn_index": t["turn_index"]} for t in turns]
    predictions = generate_or_reuse(model, tokenizer, prompts, cfg.generation, cfg.model.name, keys, store,
                                    chain_keys=[t["dialog_index"] for t in turns])
    print(store.summary())
    timings["generate_s"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    records = TurnScorer(embedder).score(dialogs, turns, predictions)
    timings["score_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    timings["turns_per_s"] = len(turns) / timings["generate_s"] if timings["generate_s"] else None

    metrics = aggregate(records)
    per_persona = aggregate_per_persona(records)
    out = Path(args.output_dir)
    write_json(out / "baseline_results.json", {
        "config": {k: v for k, v in as_dict(cfg).items() if k != "source"}, "config_file": cfg.source,
        "model": cfg.model.name, "model_path": model_path, "device": str(model.device),
        "dtype": str(model.dtype), "metrics": metrics,
        "counts": {"turns": len(turns), "dialogues": len({t["dialog_index"] for t in turns}),
                   "personas": metrics.get("personas", 0)},
        "timings": timings})
    write_json(out / "per_persona_results.json", per_persona)
    write_csv(out / "per_persona_summary.csv", summary_rows(per_persona))
    write_jsonl(out / "sample_outputs.jsonl",
                [sample_record(r, dialogs) for r in records[: cfg.evaluation.sample_outputs]])
    print(f"baseline on {len(turns)} turns, {metrics.get('personas', 0)} personas "
          f"({timings['generate_s']:.1f} s generating, {timings['turns_per_s'] or 0:.2f} turns/s)")
    print(format_metrics(metrics))
    print(f"wrote {out}/baseline_results.json, per_persona_results.json, per_persona_summary.csv, sample_outputs.jsonl")
    return 0


if __name__ == "__main__":
    run_cli(main)
