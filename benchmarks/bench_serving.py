"""One evaluation batch with 6 and with 600 LoRA adapters in the AdapterStore, against PEFT's adapter_names path.

    .venv/bin/python benchmarks/bench_serving.py [--store_sizes 6 600] [--peft_adapters 100] [--device cpu]

The model is a random one with Qwen2.5-0.5B-Instruct's layout (24 layers, the 7 LoRA projections) but
--width wide, so a forward costs what serving's own bookkeeping costs. Every adapter is r=16 on all 7
projections (the real config); the batch (--batch rows of --tokens tokens) names --distinct different
adapters, as an evaluation batch of mixed personas does. Reported: seconds to load the adapters, and the
median milliseconds of one forward over --repeats calls. PEFT's load_adapter walks every module loaded so
far, so loading N adapters costs O(N^2) (600 would take over an hour here): it is measured with
--peft_adapters loaded, fewer than the store's largest size, so the speedup printed is a lower bound.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from adaptcommand.model.adapters import attach_adapters, lora_config, save_adapter
from adaptcommand.model.config import LoraSection
from adaptcommand.model.modeling import build_layout_model, load_model_and_tokenizer
from adaptcommand.model.serving import AdapterStore

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def adapter_folders(model_dir, root, count, device):
    """`count` adapter folders: one random r=16 adapter, hard-linked (what is timed is reading and placing)."""
    from peft import get_peft_model

    model, _, _ = load_model_and_tokenizer(str(model_dir), device=device)
    torch.manual_seed(0)
    config = lora_config(LoraSection(r=16, alpha=32, dropout=0.0, target_modules=TARGETS))
    config.init_lora_weights = False
    first = root / "adapter_0"
    save_adapter(get_peft_model(model, config, adapter_name="x"), "x", first, {"note": "random"})
    folders = {"u0": first}
    for i in range(1, count):
        folder = root / f"adapter_{i}"
        folder.mkdir()
        for item in first.iterdir():
            if item.is_file():
                os.link(item, folder / item.name)
        folders[f"u{i}"] = folder
    return folders


def time_calls(model, batch, names, route, repeats):
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            kwargs = route(names)
            model(input_ids=batch, logits_to_keep=1, **kwargs)
            if batch.device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store_sizes", type=int, nargs="+", default=[6, 600])
    parser.add_argument("--peft_adapters", type=int, default=100)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--distinct", type=int, default=4, help="different adapters named in one batch")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_layout_model(tmp / "model", width=args.width)
        folders = adapter_folders(model_dir, tmp, max(*args.store_sizes, args.peft_adapters), args.device)
        batch = torch.randint(10, 1000, (args.batch, args.tokens), device=args.device)
        names = [f"u{i % args.distinct}" for i in range(args.batch)]
        ours = {}
        for size in args.store_sizes:
            model, _, _ = load_model_and_tokenizer(str(model_dir), device=args.device)
            held = dict(list(folders.items())[:size])
            t0 = time.perf_counter()
            store = AdapterStore.for_folders(model, held.values())
            assert store.load(held) == {}
            load = time.perf_counter() - t0
            ours[size] = time_calls(model, batch, names, lambda n: store.route(n) or {}, args.repeats)
            print(f"store, {size} adapters held: load {load:.1f} s, {ours[size]:.1f} ms per call")
        model, _, _ = load_model_and_tokenizer(str(model_dir), device=args.device)
        t0 = time.perf_counter()
        peft_model = attach_adapters(model, dict(list(folders.items())[:args.peft_adapters]))
        load = time.perf_counter() - t0
        theirs = time_calls(peft_model, batch, names, lambda n: {"adapter_names": n}, args.repeats)
        print(f"PEFT adapter_names, {args.peft_adapters} adapters loaded: load {load:.1f} s, {theirs:.1f} ms per call")
    small, large = min(args.store_sizes), max(args.store_sizes)
    print(f"store: {large} adapters cost {ours[large] / ours[small]:.2f}x the per-call time of {small} "
          f"(target: within 1.2x)")
    print(f"speedup: {theirs / ours[large]:.2f}x (store with {large} held {ours[large]:.1f} ms vs PEFT with "
          f"{args.peft_adapters} loaded {theirs:.1f} ms per call, batch {args.batch} x {args.tokens} tokens)")


if __name__ == "__main__":
    main()
