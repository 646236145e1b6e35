"""Our trainer against the study guide's recipe: wall time for the same personas, and val loss.

    .venv/bin/python benchmarks/bench_training.py [--personas 2] [--epochs 1] [--sessions 20]

Ours: the base model loaded once; per persona a fresh LoRA trained on whole train dialogues with
the loss on assistant tokens (scripts/train_lora_per_user.py). Reference (the guide's recipe): per
persona the base model loaded again, one example per assistant turn with its history (the
prompt builder's prompt + the reply, loss on the reply), Hugging Face `Trainer`. Same model, LoRA
settings, epochs and learning rate (configs/demo/lora_training.json); the guide batches 4 turn
examples per step, ours 1 dialogue (about 5 assistant turns), so both make a similar number of
optimizer steps per epoch. Both adapters'
val loss is measured by the same function (assistant-token cross-entropy on the persona's val
dialogues, adaptcommand/model/training.py:mean_loss).
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import demo_dataset, peak_rss_mb, training_examples

from adaptcommand.model.adapters import AdapterJob, lora_config
from adaptcommand.model.config import load_config, with_values
from adaptcommand.model.modeling import load_model_and_tokenizer
from adaptcommand.model.prompting import build_turn_messages
from adaptcommand.model.training import IGNORE, AdapterTrainer, collate, mean_loss, select_examples


def per_turn_examples(tokenizer, dialogs, indices, cfg):
    """The guide's samples: for each assistant turn, its prompt (history) and the reply as the target."""
    examples = []
    for i in indices:
        dialog = dialogs[i]
        for t, message in enumerate(dialog["messages"]):
            if message["role"] != "assistant":
                continue
            prompt_messages = build_turn_messages(dialog, t, cfg.prompt)
            prompt = tokenizer.apply_chat_template(prompt_messages, tokenize=False, add_generation_prompt=True)
            full = tokenizer.apply_chat_template(prompt_messages + [{"role": "assistant", "content": message["text"]}],
                                                 tokenize=False)
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            ids = tokenizer(full, add_special_tokens=False)["input_ids"][: cfg.training.max_seq_length]
            examples.append({"input_ids": ids, "labels": [IGNORE] * len(p_ids) + ids[len(p_ids):]})
    return examples


def guide_recipe(model_name, persona_jobs, dialogs, cfg, seed, out_dir):
    """Per persona: load the base model, wrap it in a LoRA, train with transformers.Trainer."""
    from peft import get_peft_model
    from transformers import Trainer, TrainingArguments

    tc = cfg.training
    adapters = {}
    for persona, train_ix, _ in persona_jobs:
        model, tokenizer, _ = load_model_and_tokenizer(model_name, device="cpu")
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora_config(cfg.lora))
        pad = tokenizer.pad_token_id

        def collator(batch, pad=pad):
            input_ids, attention, labels = collate(batch, pad)
            return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}

        args = TrainingArguments(output_dir=f"{out_dir}/{persona}", per_device_train_batch_size=tc.batch_size,
                                 num_train_epochs=tc.epochs, learning_rate=tc.learning_rate,
                                 weight_decay=tc.weight_decay, warmup_steps=float(tc.warmup_ratio),
                                 max_grad_norm=tc.max_grad_norm, lr_scheduler_type="linear", seed=seed,
                                 save_strategy="no", report_to=[], logging_steps=50, use_cpu=True,
                                 disable_tqdm=True, remove_unused_columns=False)
        Trainer(model=peft_model, args=args, data_collator=collator,
                train_dataset=per_turn_examples(tokenizer, dialogs, train_ix, cfg)).train()
        adapters[persona] = (peft_model.eval(), tokenizer)
    return adapters


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="configs/demo/lora_training.json")
    parser.add_argument("--personas", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--ours_epochs", type=int, default=None,
                        help="epochs for our trainer (default: --epochs); ours makes one step per dialogue, "
                             "fewer than the guide's one per 4 turns, so equal val loss can need more epochs")
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--guide_batch_size", type=int, default=4,
                        help="the guide's batch of turn examples; ours batches whole dialogues (~5 turns each)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    seed = cfg.training.seeds[0]  # one training run: the first seed
    cfg = with_values(cfg, "training", epochs=args.epochs, early_stopping_patience=args.epochs)  # same epochs on both sides
    guide = with_values(cfg, "training", batch_size=args.guide_batch_size)
    ours_epochs = args.ours_epochs or args.epochs
    cfg = with_values(cfg, "training", epochs=ours_epochs, early_stopping_patience=ours_epochs)
    with tempfile.TemporaryDirectory() as tmp:
        dialogs, splits = demo_dataset(tmp, personas=args.personas, sessions=args.sessions)
    jobs = [(p, s["train"], s["val"]) for p, s in sorted(splits.items())]
    model_name = cfg.model.name
    load_model_and_tokenizer(model_name, device="cpu")  # build the base cache outside both timings

    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        model, tokenizer, _ = load_model_and_tokenizer(model_name, device="cpu")
        examples = training_examples(tokenizer, dialogs, cfg)
        trainer = AdapterTrainer(model, tokenizer, cfg, examples)
        ours_val = {}
        for persona, train_ix, val_ix in jobs:
            log = trainer.train(AdapterJob(persona, train_ix, val_ix, seed, Path(f"{out}/ours/{persona}")), {})
            ours_val[persona] = log["best_val_loss"]  # mean_loss on the same val examples, inside train_adapter
        ours_s = time.perf_counter() - t
        ours_rss = peak_rss_mb()

        t = time.perf_counter()
        reference = guide_recipe(model_name, jobs, dialogs, guide, seed, f"{out}/reference")
        ref_s = time.perf_counter() - t
        ref_rss = peak_rss_mb()
    ref_val = {}
    for persona, _, val_ix in jobs:
        ref_model, ref_tok = reference[persona]
        ref_val[persona] = mean_loss(ref_model, select_examples(examples, val_ix), ref_tok.pad_token_id)

    n_train = sum(len(j[1]) for j in jobs)
    print(f"{len(jobs)} personas, {n_train} train dialogues, epochs: ours {ours_epochs}, guide {args.epochs}, model {model_name}, "
          f"batch: ours {cfg.training.batch_size} dialogue(s), guide {args.guide_batch_size} turns")
    for persona, _, _ in jobs:
        print(f"  {persona}: val loss ours {ours_val[persona]:.4f}, reference {ref_val[persona]:.4f}")
    mean = lambda d: sum(d.values()) / len(d)  # noqa: E731
    print(f"ours: {ours_s:.0f} s, mean val loss {mean(ours_val):.4f}, peak RSS {ours_rss:.0f} MB")
    print(f"reference (guide's recipe): {ref_s:.0f} s, mean val loss {mean(ref_val):.4f}, peak RSS {ref_rss:.0f} MB")
    print(f"speedup: {ref_s / ours_s:.2f}x ({ours_s:.0f} s vs {ref_s:.0f} s)")


if __name__ == "__main__":
    main()
