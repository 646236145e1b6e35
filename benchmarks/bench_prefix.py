"""Generating the prefix arms' replies: each dialogue prefilled once after the prefix, against every prompt prefilled.

    .venv/bin/python benchmarks/bench_prefix.py [--config configs/demo/lora_eval.json] [--personas 4] [--turns_per_persona 8]

Same turns, one random prefix-tuning adapter per persona (the training config's `prefix` shape), same
prompts and generation settings (the config's), two ways, each one prefix adapter at a time (PEFT cannot
mix prefix adapters in a batch):
- ours: each dialogue's longest prompt prefilled once after the adapter's prefix, every turn decoded from
  its slice of that cache (adaptcommand/model/generation.py);
- reference: each adapter's prompts in left-padded batches, every prompt prefilled after the prefix (what
  eval_lora.py did for the prefix arms before).
For scale, the LoRA arm's path on the same turns (random r=16 LoRAs, personas mixed in a batch) is timed
too: what a prefix arm costs against a LoRA arm.
"""

import tempfile
import time

import torch
from common import peak_rss_mb, per_persona_arguments, per_persona_turns, prefill_report

from adaptcommand.model.arm_registry import ARMS
from adaptcommand.evaluation.evaluation import build_prompts
from adaptcommand.model.adapters import lora_config, prefix_config
from adaptcommand.model.config import load_config
from adaptcommand.model.generation import (
    GenerationStats,
    encode_prompts,
    generate_texts,
    generation_kwargs,
    padded_batch,
    prefix_front,
    prefix_generate,
)
from adaptcommand.model.modeling import load_model_and_tokenizer


def random_adapters(cfg, peft_cfg, names, scale):
    """A PEFT model holding one randomly initialised adapter per name (what is timed does not depend on the
    weights' values; `scale` keeps a prefix far enough from zero to change the replies)."""
    from peft import get_peft_model

    model, tokenizer, _ = load_model_and_tokenizer(cfg.model.name, device="cpu")
    peft_model = None
    for k, name in enumerate(names):
        torch.manual_seed(k)
        if peft_model is None:
            peft_model = get_peft_model(model, peft_cfg, adapter_name=name)
        else:
            peft_model.add_adapter(name, peft_cfg)
        if scale:
            with torch.no_grad():
                peft_model.prompt_encoder[name].embedding.weight.normal_(std=scale)
    return peft_model.eval(), tokenizer


@torch.inference_mode()
def every_prompt_prefilled(model, tokenizer, prompts, names, gen_cfg):
    """The reference: per adapter, its prompts shortest first in batches, each prompt prefilled after the prefix."""
    ids = encode_prompts(tokenizer, prompts)
    kwargs = generation_kwargs(model, tokenizer, gen_cfg)
    replies, stats = [None] * len(ids), GenerationStats()
    for name in dict.fromkeys(names):
        model.set_adapter(name)
        mine = sorted((i for i, n in enumerate(names) if n == name), key=lambda i: len(ids[i]))
        for start in range(0, len(mine), gen_cfg.batch_size):
            batch = mine[start:start + gen_cfg.batch_size]
            tokens, mask = padded_batch(tokenizer, [ids[i] for i in batch], "cpu")
            out = prefix_generate(model, tokens, mask, kwargs)
            stats.prefilled += int(mask.sum())
            for i, generated in zip(batch, out[:, prefix_front(model) + tokens.shape[1]:]):
                replies[i] = tokenizer.decode(generated, skip_special_tokens=True).strip()
                stats.generated += int((generated != tokenizer.pad_token_id).sum())
    return replies, stats


def main():
    args = per_persona_arguments(__doc__.split("\n")[0])
    cfg = load_config(args.config)
    train_cfg = load_config(args.train_config)
    gen_cfg = cfg.generation
    with tempfile.TemporaryDirectory() as tmp:
        dialogs, personas, turns = per_persona_turns(tmp, args.personas, args.turns_per_persona)
    keys = [t["dialog_index"] for t in turns]

    names = {p: ARMS["prefix_per_user"].adapter_name(p) for p in personas}
    model, tokenizer = random_adapters(cfg, prefix_config(train_cfg.prefix), list(names.values()), scale=0.5)
    prompts = build_prompts(tokenizer, dialogs, turns, cfg.prompt)
    turn_names = [names[t["persona_id"]] for t in turns]
    print(f"{len(personas)} personas x {args.turns_per_persona} turns, prefix of "
          f"{train_cfg.prefix.num_virtual_tokens} virtual tokens per adapter, up to {gen_cfg.max_new_tokens} "
          f"new tokens, batch {gen_cfg.batch_size}")

    t = time.perf_counter()
    reference, reference_stats = every_prompt_prefilled(model, tokenizer, prompts, turn_names, gen_cfg)
    reference_s = time.perf_counter() - t

    t = time.perf_counter()
    stats = GenerationStats()
    ours = generate_texts(model, tokenizer, prompts, gen_cfg, adapter_names=turn_names, progress=False,
                          chain_keys=keys, stats=stats)
    ours_s = time.perf_counter() - t
    del model

    lora_names = {p: ARMS["lora_per_user"].adapter_name(p) for p in personas}
    lora = lora_config(train_cfg.lora)
    lora.init_lora_weights = False  # random A and B: a real, non-zero update
    lora_model, _ = random_adapters(cfg, lora, list(lora_names.values()), scale=None)
    t = time.perf_counter()
    generate_texts(lora_model, tokenizer, prompts, gen_cfg, adapter_names=[lora_names[t["persona_id"]] for t in turns],
                   progress=False, chain_keys=keys)
    lora_s = time.perf_counter() - t

    n = len(turns)
    same = sum(a == b for a, b in zip(ours, reference))
    print(prefill_report(turns, encode_prompts(tokenizer, prompts), stats, "every prompt prefilled"))
    print(f"identical replies: {same}/{n}; prefilled prompt tokens: ours {stats.prefilled}, "
          f"reference {reference_stats.prefilled}")
    print(f"reference (every prompt prefilled, one prefix adapter at a time): {n / reference_s:.2f} turns/s "
          f"({reference_s:.1f} s)")
    print(f"LoRA arm on the same turns (mixed-adapter batches, each dialogue prefilled once): {n / lora_s:.2f} "
          f"turns/s ({lora_s:.1f} s); the prefix arm takes {ours_s / lora_s:.2f}x its time")
    print(f"ours (each dialogue prefilled once after the prefix): {n / ours_s:.2f} turns/s ({ours_s:.1f} s); "
          f"peak RSS {peak_rss_mb():.0f} MB")
    print(f"speedup: {reference_s / ours_s:.2f}x ({n / ours_s:.2f} vs {n / reference_s:.2f} turns/s)")


if __name__ == "__main__":
    main()
