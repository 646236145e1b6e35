"""Check the real configs on one GPU in at most ten minutes, and project what the whole real study costs.

    python benchmarks/bench_gpu.py                           # a GPU: Qwen2.5-0.5B-Instruct, or a random model of its shape
    python benchmarks/bench_gpu.py --model /path/to/Qwen2.5-0.5B-Instruct
    .venv/bin/python benchmarks/bench_gpu.py --tiny          # CPU: the same steps, small, on a 64-wide model

With the real configs' LoRA (configs/lora_training.json) and generation settings (configs/lora_eval.json):
(a) one-by-one training steps: tokens/s, peak GiB, parameter dtypes, the losses finite;
(b) the stacked trainer at K personas per pass with micro-batches: tokens/s, peak GiB, or OOM;
(c) serving random r=16 adapters through the evaluation's AdapterStore: load seconds, GiB, per-call ms;
(d) replies at the real generation settings: turns/s and ms per decode step;
(e) cloze items on demo dialogues: items/s.
Then it projects the hours of each training arm, of the evaluation and of the whole study, and, last, the
settings to use. Training uses random token sequences of --seq_len (the real dialogues' length), so
no dataset is needed. Without --model (or with a folder that is not there) the model is random with
Qwen2.5-0.5B-Instruct's exact configuration (width 896, 24 layers, vocabulary 151,936, tied embeddings).
"""

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import demo_dataset, qwen_shaped, random_examples

from adaptcommand.model.config import LoraSection, load_config, with_values

ROOT = Path(__file__).resolve().parent.parent
# the real study's size: 200 users, 30 train / 10 val / 10 test dialogues each, three seeds
USERS, TRAIN, SEEDS, TEST_TURNS = 200, 30, 3, 5936


def sync(device):
    if device == "cuda":
        torch.cuda.synchronize()


def peak_gib(device):
    if device != "cuda":
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return torch.cuda.max_memory_allocated() / 2**30


def reset_peak(device):
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def load_model(args, device, dtype):
    """(model, tokenizer, what it is): the real model where its folder is given and present, else a random
    one of its configuration (or the 64-wide layout model with --tiny)."""
    from transformers import AutoModelForCausalLM

    from adaptcommand.model.modeling import build_layout_model, embedded_tokenizer, load_tokenizer, plain_generation_config

    if args.model and Path(args.model).is_dir():
        model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device).eval()
        tokenizer, label = load_tokenizer(args.model), f"{args.model}"
    elif args.tiny or (args.smoke and device == "cpu"):
        folder = build_layout_model(Path(args.tmp) / "layout")
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(device).eval()
        tokenizer, label = load_tokenizer(folder), "random 64-wide model with Qwen2.5-0.5B's layout"
    else:
        tokenizer = embedded_tokenizer()
        tokenizer.padding_side = "left"
        model = qwen_shaped(device, dtype, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id).eval()
        label = "random model with Qwen2.5-0.5B-Instruct's exact configuration"
    model.generation_config = plain_generation_config(model.generation_config)
    return model, tokenizer, label


def one_by_one(model, cfg, args, device):
    """(a): --steps optimizer steps of one PEFT LoRA adapter at the real config's batch size."""
    from adaptcommand.model.training import AdapterTrainer, train_adapter

    cfg = with_values(cfg, "training", epochs=1, select_by="last")
    examples = random_examples(args.steps * cfg.training.batch_size, args.seq_len, args.vocab, 0, args.seq_len * 2 // 3)
    trainer = AdapterTrainer(model, None, cfg, None)
    adapter = trainer.fresh_adapter("bench", seed=0)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") + (" (adapter)" if p.requires_grad else " (base)")
                     for p in trainer.peft_model.parameters()})
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    log = train_adapter(trainer.peft_model, examples, [], cfg.training, 0, seed=0, progress=False)
    sync(device)
    seconds = time.perf_counter() - t0
    trainer.release(adapter)
    finite = all(math.isfinite(x) for x in log["step_train_loss"])
    tokens = sum(len(e["input_ids"]) for e in examples)
    print(f"(a) one by one: {log['optimizer_steps']} steps, {tokens / seconds:.0f} tokens/s, peak {peak_gib(device):.1f} GiB, "
          f"dtypes {', '.join(dtypes)}, losses finite: {finite}", flush=True)
    model = trainer.peft_model.unload() if hasattr(trainer.peft_model, "unload") else model
    return model, tokens / seconds


def stacked(model, cfg, args, device):
    """(b): the stacked trainer at each K, one epoch of --per_persona sequences each; {K: tokens/s or None}."""
    from adaptcommand.model.multi_lora import train_group

    rates = {}
    for k in args.k:
        one_epoch = with_values(cfg, "training", epochs=1, select_by="last", micro_batch_size=args.micro)
        train_sets = [random_examples(args.per_persona, args.seq_len, args.vocab, s, args.seq_len * 2 // 3)
                      for s in range(k)]
        reset_peak(device)
        try:
            sync(device)
            t0 = time.perf_counter()
            model, _, _ = train_group(model, one_epoch, train_sets, [[] for _ in range(k)], 0, seed=0, progress=False)
            sync(device)
            rates[k] = k * args.per_persona * args.seq_len / (time.perf_counter() - t0)
            print(f"(b) stacked K={k}, micro-batch {args.micro or 'whole step'}: {rates[k]:.0f} tokens/s, "
                  f"peak {peak_gib(device):.1f} GiB", flush=True)
        except torch.OutOfMemoryError:
            rates[k] = None
            print(f"(b) stacked K={k}: out of memory", flush=True)
            reset_peak(device)
    return model, rates


def serving(model, args, device):
    """(c): --adapters random r=16 adapters in the evaluation's AdapterStore; per-call ms of a mixed batch."""
    from peft import get_peft_model

    from adaptcommand.model.adapters import lora_config, save_adapter
    from adaptcommand.model.serving import AdapterStore

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    config = lora_config(LoraSection(r=16, alpha=32, dropout=0.0, target_modules=targets))
    config.init_lora_weights = False
    folder = Path(args.tmp) / "adapter"
    peft_model = get_peft_model(model, config, adapter_name="x")
    save_adapter(peft_model, "x", folder, {"note": "random"})
    model = peft_model.unload()
    reset_peak(device)
    t0 = time.perf_counter()
    store = AdapterStore.for_folders(model, [folder])
    assert store.load({f"u{i}": folder for i in range(args.adapters)}) == {}
    sync(device)
    load = time.perf_counter() - t0
    batch = torch.randint(10, args.vocab, (args.batch, args.seq_len // 2), device=device)
    times = []
    with torch.no_grad():
        for _ in range(6):
            sync(device)
            t0 = time.perf_counter()
            store.route([f"u{(i * 37) % args.adapters}" for i in range(args.batch)])
            model(input_ids=batch, logits_to_keep=1)
            sync(device)
            times.append(time.perf_counter() - t0)
    per_call = statistics.median(times[1:]) * 1000
    print(f"(c) serving {args.adapters} adapters: load {load:.1f} s, peak {peak_gib(device):.1f} GiB, "
          f"{per_call:.1f} ms per call (batch {args.batch} x {args.seq_len // 2} tokens, every row its own adapter)",
          flush=True)
    return model, store, per_call


def replies(model, tokenizer, eval_cfg, args, device):
    """(d): --replies replies at the real generation settings on demo prompts; (turns/s, ms per decode step)."""
    from adaptcommand.data.demo_data import generate
    from adaptcommand.model.generation import GenerationStats, generate_texts
    from adaptcommand.model.prompting import build_turn_messages, render_prompt

    dialogs = [{"messages": s["messages"]} for row in generate(8, 20, seed=0)[2] for s in row["sessions"]]
    prompts = [render_prompt(tokenizer, build_turn_messages(d, t, eval_cfg.prompt))
               for d in dialogs for t, m in enumerate(d["messages"]) if m["role"] == "assistant"][:args.replies]
    stats = GenerationStats()
    sync(device)
    t0 = time.perf_counter()
    generate_texts(model, tokenizer, prompts, eval_cfg.generation, progress=False, stats=stats)
    sync(device)
    seconds = time.perf_counter() - t0
    steps = math.ceil(len(prompts) / eval_cfg.generation.batch_size) * eval_cfg.generation.max_new_tokens
    print(f"(d) {len(prompts)} replies, max {eval_cfg.generation.max_new_tokens} new tokens, batch "
          f"{eval_cfg.generation.batch_size}: {len(prompts) / seconds:.1f} turns/s, "
          f"{seconds / steps * 1000:.1f} ms per decode step (upper bound: steps counted at the maximum)", flush=True)
    return len(prompts) / seconds


def cloze(model, tokenizer, eval_cfg, args):
    """(e): --items cloze items of demo dialogues on the base model; items/s."""
    from adaptcommand.evaluation.action_metrics import ActionExtractor
    from adaptcommand.evaluation.cloze import cloze_items, score_items
    from adaptcommand.evaluation.routine_knowledge import message_actions

    (Path(args.tmp) / "raw").mkdir()
    dialogs, _ = demo_dataset(Path(args.tmp) / "raw", personas=4, sessions=20)
    extract = ActionExtractor().extract_actions
    items = cloze_items(dialogs, {"p": list(range(len(dialogs)))}, lambda i: message_actions(dialogs[i], extract))
    items = items[:args.items]
    t0 = time.perf_counter()
    score_items(model, tokenizer, dialogs, items, eval_cfg.prompt, "baseline", lambda p: None, {})
    rate = len(items) / (time.perf_counter() - t0)
    print(f"(e) {len(items)} cloze items: {rate:.2f} items/s", flush=True)
    return rate


def projection(train_cfg, one_rate, stacked_rates, turns_per_s, items_per_s, args):
    """Hours of each training arm, the evaluation and the study at the real size, from the rates above."""
    t = train_cfg.training
    per_user = USERS * TRAIN * args.seq_len * SEEDS
    best_k = max((k for k, r in stacked_rates.items() if r), key=lambda k: stacked_rates[k], default=None)
    stacked_rate = stacked_rates[best_k] if best_k else one_rate
    val = 1 + 1 / 3 / 3  # a val pass over a third as many dialogues, forward only, after each epoch
    arms = {"lora_all": per_user * (t.unified_epochs or t.epochs) * val / one_rate,
            "lora_per_user": per_user * t.epochs * val / stacked_rate,
            "lora_per_user_on_all": per_user * t.epochs * val / stacked_rate,
            "lora_all_on_all": per_user * t.epochs * val / one_rate,
            "prefix_all": per_user * (t.unified_epochs or t.epochs) * val / one_rate,
            "prefix_per_user": per_user * t.epochs * val / one_rate}
    model_arms, adapter_arms = 3, 6  # baseline, character, retrieval; six adapter arms of three seeds each
    evaluated = TEST_TURNS * 2 * (model_arms + adapter_arms * SEEDS)  # test and val (best-on-val)
    evaluation = evaluated / turns_per_s + TEST_TURNS * 2 * (model_arms + adapter_arms * SEEDS) / items_per_s / 2.5
    print("projected for the real study (200 users x 30 train dialogues of "
          f"{args.seq_len} tokens, {SEEDS} seeds, every epoch run to its cap; one-by-one rate for the unified, "
          f"comparator and prefix scopes, stacked K={best_k} for the per-user LoRA scopes):")
    for arm, seconds in arms.items():
        print(f"  training {arm}: {seconds / 3600:.2f} h")
    print(f"  evaluation ({evaluated} replies; about one cloze item per 2.5 turns): {evaluation / 3600:.2f} h")
    print(f"  the whole study: {(sum(arms.values()) + evaluation) / 3600:.2f} h")
    return best_k


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a local folder of Qwen2.5-0.5B-Instruct (default: random)")
    parser.add_argument("--tiny", action="store_true", help="CPU check: a 64-wide model, every count small")
    parser.add_argument("--device", default=None, help="default: cuda if there is one, else cpu")
    parser.add_argument("--smoke", action="store_true",
                        help="`make check-gpu`: the device, the dtype, one training step and four replies, nothing more")
    args = parser.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    small = args.tiny or args.smoke
    args.steps, args.k, args.per_persona = (1 if args.smoke else 4, [2, 4], 2) if small else (100, [8, 32, 64], 4)
    args.adapters, args.replies, args.items = (12, 4 if args.smoke else 16, 3) if small else (600, 512, 30)
    args.seq_len, args.batch, args.micro = (96 if small else 300), 8, (0 if device == "cuda" else 1)
    train_cfg = load_config(ROOT / "configs/lora_training.json")
    eval_cfg = load_config(ROOT / "configs/lora_eval.json")
    if small:
        eval_cfg = with_values(eval_cfg, "generation", max_new_tokens=4, batch_size=8)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        model, tokenizer, label = load_model(args, device, dtype)
        args.vocab = min(model.config.vocab_size, len(tokenizer))
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
        print(f"{label} on {name} ({str(dtype).removeprefix('torch.')}), torch {torch.__version__}", flush=True)
        t0 = time.perf_counter()
        model, one_rate = one_by_one(model, train_cfg, args, device)
        if args.smoke:
            replies(model, tokenizer, eval_cfg, args, device)
            print(f"smoke test passed on {name}: one training step and {args.replies} replies")
            return
        model, stacked_rates = stacked(model, train_cfg, args, device)
        model, store, _ = serving(model, args, device)
        store.load({})  # replies and cloze on the base model
        turns_per_s = replies(model, tokenizer, eval_cfg, args, device)
        items_per_s = cloze(model, tokenizer, eval_cfg, args)
        best_k = projection(train_cfg, one_rate, stacked_rates, turns_per_s, items_per_s, args)
        print(f"benchmark time: {time.perf_counter() - t0:.0f} s")
    print("settings: " + json.dumps({"training.parallel_personas": best_k, "training.micro_batch_size": args.micro,
                                     "generation.batch_size": eval_cfg.generation.batch_size}))


if __name__ == "__main__":
    main()
