"""Batched generation reading each dialogue's history once (ours) against one-turn-at-a-time `model.generate`.

    .venv/bin/python benchmarks/bench_generation.py [--config configs/demo/baseline_v1.0.json] [--turns 48]

Both paths generate greedily from identical prompts (the baseline's prompt builder on demo test
turns) with the config's model (the embedded SmolLM2-135M-Instruct), prompt and generation
settings (max_new_tokens, batch_size). Ours carries each dialogue's key/value cache across its
turns (adaptcommand/model/generation.py); the reference prefills every turn's prompt from scratch. Beside the
speedup: prompt tokens prefilled per turn by each, and the floor (each dialogue's tokens once,
plus the generated tokens). The reference runs first; peak RSS is read after each path (the
process peak, so the second figure includes the first).
"""

import argparse
import dataclasses
import tempfile
import time

import torch
from common import demo_dataset, peak_rss_mb, prefill_report

from adaptcommand.data.splits import split_indices
from adaptcommand.evaluation.evaluation import build_prompts, collect_turns
from adaptcommand.model.config import load_config
from adaptcommand.model.generation import GenerationStats, encode_prompts, generate_texts, generation_kwargs
from adaptcommand.model.modeling import load_model_and_tokenizer


def one_by_one(model, tokenizer, prompts, gen_cfg):
    kwargs = generation_kwargs(model, tokenizer, gen_cfg)
    replies = []
    with torch.inference_mode():
        for ids in encode_prompts(tokenizer, prompts):
            input_ids = torch.tensor([ids])
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids), **kwargs)
            replies.append(tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip())
    return replies


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo/baseline_v1.0.json")
    parser.add_argument("--turns", type=int, default=48)
    args = parser.parse_args()
    cfg = load_config(args.config)
    gen = cfg.generation
    with tempfile.TemporaryDirectory() as tmp:
        dialogs, splits = demo_dataset(tmp)
    turns = collect_turns(dialogs, split_indices(splits, "test", sorted(splits)), args.turns)
    model, tokenizer, _ = load_model_and_tokenizer(cfg.model.name, device="cpu")
    prompts = build_prompts(tokenizer, dialogs, turns, cfg.prompt)
    print(f"{len(turns)} turns, prompt tokens {sum(map(len, encode_prompts(tokenizer, prompts))) / len(prompts):.0f} "
          f"on average, up to {gen['max_new_tokens']} new tokens, torch threads {torch.get_num_threads()}")
    one_by_one(model, tokenizer, prompts[:1], dataclasses.replace(gen, max_new_tokens=2))  # warm-up

    t = time.perf_counter()
    reference = one_by_one(model, tokenizer, prompts, gen)
    ref_s = time.perf_counter() - t
    ref_rss = peak_rss_mb()
    t = time.perf_counter()
    stats = GenerationStats()
    ours = generate_texts(model, tokenizer, prompts, gen, progress=False, chain_keys=[t["dialog_index"] for t in turns],
                          stats=stats)
    ours_s = time.perf_counter() - t
    ours_rss = peak_rss_mb()

    ids = encode_prompts(tokenizer, prompts)
    n = len(turns)
    same = sum(a == b for a, b in zip(ours, reference))
    print(f"one-by-one: {n / ref_s:.2f} turns/s ({ref_s:.1f} s), peak RSS {ref_rss:.0f} MB")
    print(f"ours (batch {gen['batch_size']}, cache carried across a dialogue's turns): {n / ours_s:.2f} turns/s "
          f"({ours_s:.1f} s), peak RSS {ours_rss:.0f} MB")
    print(f"identical replies: {same}/{n}")
    print(prefill_report(turns, ids, stats, "one-by-one"))
    print(f"speedup: {ref_s / ours_s:.2f}x ({n / ours_s:.2f} vs {n / ref_s:.2f} turns/s)")


if __name__ == "__main__":
    main()
