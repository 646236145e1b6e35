"""K personas' adapters trained in one batched pass against one after another.

    .venv/bin/python benchmarks/bench_multi_lora.py [--k 8] [--sessions 10] [--epochs 1]     # CPU, demo data
    python benchmarks/bench_multi_lora.py --shape qwen2.5-0.5b --k 32 --device cuda             # a GPU

CPU mode: the embedded SmolLM2 on K demo personas, configs/demo/lora_training.json settings;
one by one = the standard trainer per persona (base loaded once), batched = parallel_personas K.
On 2 CPU cores the arithmetic is already saturated by one sequence, so the batched trainer feeds
one sequence per forward pass there (--micro_batch_size 1: no padding, memory of one sequence);
on a GPU it runs the whole mixed batch at once.
Shape mode: a randomly initialised model with Qwen2.5-0.5B-Instruct's exact shape (the real
weights cannot be fetched there) on random token sequences of --seq_len; it reports training
tokens/s both ways and projects the time for 200 personas x 30 dialogues x 3 epochs.
"""

import argparse
import tempfile
import time

import torch
from common import demo_dataset, peak_rss_mb, qwen_shaped, random_examples, training_examples

from adaptcommand.model.config import load_config, with_values
from adaptcommand.model.modeling import load_model_and_tokenizer
from adaptcommand.model.multi_lora import train_group
from adaptcommand.model.training import AdapterTrainer, select_examples, train_adapter


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo/lora_training.json")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--shape", choices=["qwen2.5-0.5b"], default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seq_len", type=int, default=300)
    parser.add_argument("--dialogues", type=int, default=30, help="per persona, shape mode")
    parser.add_argument("--micro_batch_size", type=int, default=None,
                        help="sequences per forward pass in the batched trainer (default: 1 on CPU, all on a GPU)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    seed = cfg.training.seeds[0]  # one training run: the first seed
    cfg = with_values(cfg, "training", epochs=args.epochs, early_stopping_patience=args.epochs)
    micro = args.micro_batch_size if args.micro_batch_size is not None else (1 if args.device == "cpu" else 0)
    cfg = with_values(cfg, "training", micro_batch_size=micro)
    if args.shape:
        dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
        model = qwen_shaped(args.device, dtype)
        cfg.lora.update(r=8, alpha=16, target_modules=["q_proj", "v_proj"])
        cfg = with_values(cfg, "training", batch_size=4)
        train_sets = [random_examples(args.dialogues, args.seq_len, model.config.vocab_size, k, args.seq_len // 3)
                      for k in range(args.k)]
        val_sets = [[] for _ in range(args.k)]
        pad_id = 0
        label = f"Qwen2.5-0.5B-shaped random model on {args.device} ({dtype}), {args.dialogues} sequences of {args.seq_len} tokens per persona"
    else:
        with tempfile.TemporaryDirectory() as tmp:
            dialogs, splits = demo_dataset(tmp, personas=args.k, sessions=args.sessions)
        model, tokenizer, _ = load_model_and_tokenizer(cfg.model.name, device=args.device)
        examples = training_examples(tokenizer, dialogs, cfg)
        train_sets = [select_examples(examples, s["train"]) for _, s in sorted(splits.items())]
        val_sets = [select_examples(examples, s["val"]) for _, s in sorted(splits.items())]
        pad_id = tokenizer.pad_token_id
        label = f"embedded SmolLM2-135M on {args.device}, {args.k} demo personas x {len(train_sets[0])} train dialogues"
    tokens = sum(len(e["input_ids"]) for t in train_sets for e in t) * args.epochs
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)

    sync()
    t = time.perf_counter()
    model, _, _ = train_group(model, cfg, train_sets, val_sets, pad_id, seed, progress=False)
    sync()
    batched_s = time.perf_counter() - t
    batched_rss = peak_rss_mb()

    trainer = AdapterTrainer(model, None, cfg, None)
    t = time.perf_counter()
    for k, (train, val) in enumerate(zip(train_sets, val_sets)):
        adapter = trainer.fresh_adapter(f"b{k}", seed)
        train_adapter(trainer.peft_model, train, val, cfg.training, pad_id, seed, progress=False)
        trainer.release(adapter)
    sync()
    single_s = time.perf_counter() - t
    rss = peak_rss_mb()
    mem = f", peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if args.device == "cuda" else ""
    print(label)
    print(f"one by one: {single_s:.1f} s ({tokens / single_s:.0f} tokens/s); batched K={args.k}: {batched_s:.1f} s "
          f"({tokens / batched_s:.0f} tokens/s); peak RSS {batched_rss:.0f} MB after batched, {rss:.0f} MB at the end{mem}")
    if args.shape:
        full = 200 * 30 * 3 * args.seq_len
        print(f"projected for 200 personas x 30 dialogues x 3 epochs ({full / 1e6:.1f}M tokens): "
              f"one by one {full / (tokens / single_s) / 60:.1f} min, batched {full / (tokens / batched_s) / 60:.1f} min")
    print(f"micro-batch: {micro or 'whole step'}")
    print(f"speedup: {single_s / batched_s:.2f}x ({tokens / batched_s:.0f} vs {tokens / single_s:.0f} tokens/s)")


if __name__ == "__main__":
    main()
