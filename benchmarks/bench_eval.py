"""Evaluating N personas, each with its own adapter: mixed-adapter batches against the alternatives.

    .venv/bin/python benchmarks/bench_eval.py [--config configs/demo/lora_eval.json] [--personas 4] [--turns_per_persona 8]

Same turns, same adapters, same prompts and generation settings (the config's), three ways:
- ours: every adapter in one PEFT model, batches mixing personas (`adapter_names` per row), each
  dialogue's key/value cache carried across its turns (adaptcommand/model/generation.py);
- earlier attempt's way: per persona, load the base model, merge its adapter, generate turn by turn;
- per-persona batches: one PEFT model, one adapter active at a time, that persona's turns batched.
The adapters are randomly initialised LoRAs of the config's shape (what is timed does not depend
on the weights' values).
"""

import dataclasses
import tempfile
import time
from pathlib import Path

import torch
from common import peak_rss_mb, per_persona_arguments, per_persona_turns, prefill_report

from adaptcommand.model.arm_registry import ARMS
from adaptcommand.evaluation.evaluation import build_prompts
from adaptcommand.model.adapters import attach_adapters, lora_config, save_adapter
from adaptcommand.model.config import load_config
from adaptcommand.model.generation import GenerationStats, encode_prompts, generate_texts, generation_kwargs
from adaptcommand.model.modeling import load_model_and_tokenizer


def make_adapters(cfg, personas, folder):
    from peft import get_peft_model

    model, _, _ = load_model_and_tokenizer(cfg.model.name, device="cpu")
    lora = lora_config(cfg.lora)
    lora.init_lora_weights = False  # random A and B: a real, non-zero update
    peft_model = None
    paths = {}
    for k, persona in enumerate(personas):
        torch.manual_seed(k)
        if peft_model is None:
            peft_model = get_peft_model(model, lora, adapter_name="bench")
        else:
            peft_model.add_adapter(f"bench{k}", lora)
        name = "bench" if k == 0 else f"bench{k}"
        paths[persona] = folder / persona
        save_adapter(peft_model, name, paths[persona], {"note": "random adapter for bench_eval"})
    return paths


def earlier_way(cfg, paths, turns, prompts):
    """Per persona: fresh base model, merge its adapter, one turn at a time."""
    from peft import PeftModel

    for persona, folder in paths.items():
        base, tokenizer, _ = load_model_and_tokenizer(cfg.model.name, device="cpu")
        model = PeftModel.from_pretrained(base, folder).merge_and_unload().eval()
        kwargs = generation_kwargs(model, tokenizer, cfg.generation)
        for prompt, turn in zip(prompts, turns):
            if turn["persona_id"] != persona:
                continue
            ids = torch.tensor(encode_prompts(tokenizer, [prompt]))
            with torch.inference_mode():
                model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)


def main():
    args = per_persona_arguments(__doc__.split("\n")[0])
    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, lora=load_config(args.train_config).lora)
    with tempfile.TemporaryDirectory() as tmp:
        dialogs, personas, turns = per_persona_turns(tmp, args.personas, args.turns_per_persona)
        paths = make_adapters(cfg, personas, Path(tmp) / "adapters")
        names = {p: ARMS["lora_per_user"].adapter_name(p) for p in personas}
        base, tokenizer, _ = load_model_and_tokenizer(cfg.model.name, device="cpu")
        model = attach_adapters(base, {names[p]: paths[p] for p in personas})
        prompts = build_prompts(tokenizer, dialogs, turns, cfg.prompt)
        print(f"{len(personas)} personas x {args.turns_per_persona} turns, LoRA r={cfg.lora.r} on "
              f"{len(cfg.lora.target_modules)} modules, up to {cfg.generation.max_new_tokens} new tokens, "
              f"batch {cfg.generation.batch_size}")

        t = time.perf_counter()
        earlier_way(cfg, paths, turns, prompts)
        earlier_s = time.perf_counter() - t

        t = time.perf_counter()
        for p in personas:
            rows = [i for i, turn in enumerate(turns) if turn["persona_id"] == p]
            model.set_adapter(names[p])
            generate_texts(model, tokenizer, [prompts[i] for i in rows], cfg.generation, progress=False)
        per_persona_s = time.perf_counter() - t

        t = time.perf_counter()
        stats = GenerationStats()
        generate_texts(model, tokenizer, prompts, cfg.generation, adapter_names=[names[t["persona_id"]] for t in turns],
                       progress=False, chain_keys=[t["dialog_index"] for t in turns], stats=stats)
        ours_s = time.perf_counter() - t
        ids = encode_prompts(tokenizer, prompts)
    n = len(turns)
    print(prefill_report(turns, ids, stats, "earlier way"))
    print(f"earlier attempt's way (load + merge per persona, one turn at a time): {n / earlier_s:.2f} turns/s ({earlier_s:.1f} s)")
    print(f"per-persona batches (one adapter active at a time): {n / per_persona_s:.2f} turns/s ({per_persona_s:.1f} s)")
    print(f"ours (mixed-adapter batches): {n / ours_s:.2f} turns/s ({ours_s:.1f} s); "
          f"vs per-persona batches {per_persona_s / ours_s:.2f}x; peak RSS {peak_rss_mb():.0f} MB")
    print(f"speedup: {earlier_s / ours_s:.2f}x ({n / ours_s:.2f} vs {n / earlier_s:.2f} turns/s)")


if __name__ == "__main__":
    main()
