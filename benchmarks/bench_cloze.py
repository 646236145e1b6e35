"""Scoring the preference cloze's candidates: a token trie per item after its prefix's cache, against a row per
candidate.

    .venv/bin/python benchmarks/bench_cloze.py [--config configs/demo/lora_eval.json] [--personas 4] [--max_items 60]

The same cloze items (the stated routine values of a fresh demo dataset's test sessions, every candidate of
each: 101 for an integer parameter), the config's model and prompt, no adapter, scored two ways after the
same shared prefill:
- ours: one batch row per item after its prefix's cache, its candidates a token trie (shared leading
  tokens run once) under a mask of each node's ancestors, the vocabulary projected only on the nodes a
  next token is scored after (adaptcommand/evaluation/cloze.py, `_tail_logprobs`);
- reference: per item, one batch row per candidate, each with its own copy of the prefix's cache (what
  the cloze did first).
Both must give the same top-1 on every item; the largest score difference is printed.
"""

import argparse
import tempfile
import time

import torch
from common import demo_dataset

from adaptcommand.evaluation import cloze
from adaptcommand.evaluation.cloze import cloze_items, habit_values, score_items
from adaptcommand.evaluation.evaluation import TurnScorer
from adaptcommand.model.config import load_config
from adaptcommand.model.generation import turn_cache
from adaptcommand.model.modeling import load_model_and_tokenizer


def reference_tail_logprobs(runner, cache, items, route, pad_id=0):
    """The first scoring: per item, its tails right-padded in a batch (the pads are masked), the prefix's
    cache copied into every row, one forward each."""
    return [_reference_item(runner, cache, item, route, pad_id) for item in items]


def _reference_item(runner, cache, item, route, pad_id):
    device, length, tails = item.first.device, item.length, item.tails
    width = max(len(t) for t in tails)
    ids = torch.full((len(tails), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(tails), length + width), dtype=torch.long, device=device)
    mask[:, :length] = 1
    for row, tail in enumerate(tails):
        ids[row, : len(tail)] = torch.tensor(tail, device=device)
        mask[row, length: length + len(tail)] = 1
    rows = turn_cache(runner, cache, [item.row] * len(tails), [length] * len(tails))
    logp = torch.log_softmax(runner(input_ids=ids, attention_mask=mask, cache=rows,
                                    **route([item.adapter] * len(tails))).logits.float(), dim=-1)
    scores = []
    for row, tail in enumerate(tails):
        total = item.first[tail[0]]
        for j in range(1, len(tail)):
            total = total + logp[row, j - 1, tail[j]]
        scores.append(float(total))
    return scores


def timed_scores(tail_function, model, tokenizer, dialogs, items, prompt_cfg, habits):
    """(seconds, per-item candidate scores, results) of scoring every item with this tail scorer."""
    scores = []
    original = cloze._tail_logprobs

    def recording(*args):
        scores.append(tail_function(*args))
        return scores[-1]

    cloze._tail_logprobs = recording
    try:
        t0 = time.perf_counter()
        results = score_items(model, tokenizer, dialogs, items, prompt_cfg, "baseline", lambda persona: "base", habits)
        return time.perf_counter() - t0, scores, results
    finally:
        cloze._tail_logprobs = original


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo/lora_eval.json")
    parser.add_argument("--personas", type=int, default=4)
    parser.add_argument("--max_items", type=int, default=60)
    args = parser.parse_args()
    cfg = load_config(args.config, [])
    model, tokenizer, _ = load_model_and_tokenizer(cfg.model.name, "cpu", cfg.model.dtype)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        dialogs, splits = demo_dataset(tmp, personas=args.personas, sessions=20)
    scorer = TurnScorer(None)

    def actions_of(index):
        return scorer.dialog_state(dialogs, index)[0]

    items = cloze_items(dialogs, {p: s["test"] for p, s in splits.items()}, actions_of)[: args.max_items]
    habits = habit_values(dialogs, {p: s["train"] for p, s in splits.items()}, actions_of)
    candidates = sum(len(item.candidates) for item in items)
    print(f"{len(items)} cloze items, {candidates} candidates, {model.config._attn_implementation} attention")
    ours_s, ours, ours_results = timed_scores(cloze._tail_logprobs, model, tokenizer, dialogs, items, cfg.prompt, habits)
    ref_s, ref, ref_results = timed_scores(reference_tail_logprobs, model, tokenizer, dialogs, items, cfg.prompt,
                                           habits)
    same_top1 = sum(a.correct == b.correct for a, b in zip(ours_results, ref_results))
    largest = max(abs(a - b) for mine, theirs in zip(ours, ref) for item_a, item_b in zip(mine, theirs)
                  for a, b in zip(item_a, item_b))
    print(f"same top-1 on {same_top1}/{len(items)} items; largest score difference {largest:.2e}")
    print(f"ours {ours_s:.1f} s ({len(items) / ours_s:.2f} items/s), reference {ref_s:.1f} s "
          f"({len(items) / ref_s:.2f} items/s)")
    print(f"speedup: {ref_s / ours_s:.2f}x ({len(items) / ours_s:.2f} vs {len(items) / ref_s:.2f} items/s)")


if __name__ == "__main__":
    main()
