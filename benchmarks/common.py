"""Shared set-up for the benchmarks: a small demo dataset built in memory, its training examples, and the
per-persona test turns the evaluation benchmarks time."""

import argparse
import resource

from adaptcommand.data.cleaning import clean
from adaptcommand.data.data_io import write_jsonl
from adaptcommand.data.demo_data import generate
from adaptcommand.data.splits import make_splits
from adaptcommand.evaluation.evaluation import collect_turns
from adaptcommand.model.training import dialog_example


def demo_dataset(tmp_dir, personas=4, sessions=20, seed=0):
    """(dialogs, splits) for a fresh demo dataset written under tmp_dir."""
    characters, routines, sessions_rows = generate(personas, sessions, seed)
    for name, rows in (("characters", characters), ("routines", routines), ("sessions", sessions_rows)):
        write_jsonl(f"{tmp_dir}/{name}.jsonl", rows)
    dialogs, _, problems = clean(tmp_dir)
    assert not problems, problems
    return dialogs, make_splits(dialogs, min_dialogues=5)


def per_persona_arguments(description):
    """The evaluation benchmarks' command line: configs, and how many personas and test turns each."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="configs/demo/lora_eval.json")
    parser.add_argument("--train_config", default="configs/demo/lora_training.json", help="for the adapters' shape")
    parser.add_argument("--personas", type=int, default=4)
    parser.add_argument("--turns_per_persona", type=int, default=8)
    return parser.parse_args()


def per_persona_turns(tmp_dir, personas, turns_per_persona):
    """(dialogs, persona names, turns): a fresh demo dataset and each persona's first test turns, persona by persona."""
    dialogs, splits = demo_dataset(tmp_dir, personas=personas, sessions=20)
    names = sorted(splits)
    return dialogs, names, [t for p in names for t in collect_turns(dialogs, {p: splits[p]["test"]}, turns_per_persona)]


def training_examples(tokenizer, dialogs, cfg):
    """Every dialogue's training example (row i = dialogue i), as adaptcommand/model/training.tokenized_dialogs builds them."""
    from datasets import Dataset

    return Dataset.from_list([dialog_example(tokenizer, d, cfg.prompt, cfg.training.max_seq_length)
                              for d in dialogs])


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def prefill_report(turns, prompt_ids, stats, reference_name):
    """Tokens run through the model per turn: ours (prefilled + generated), a path that prefills every
    prompt, and the floor: each dialogue's tokens once (its last evaluated prompt holds the earlier
    ones) plus the generated tokens."""
    longest = {}
    for turn, ids in zip(turns, prompt_ids):
        longest[turn["dialog_index"]] = max(longest.get(turn["dialog_index"], 0), len(ids))
    n = len(turns)
    return (f"tokens per turn (prompt prefilled + generated): ours {stats.prefilled / n:.0f} + {stats.generated / n:.0f}, "
            f"{reference_name} {sum(map(len, prompt_ids)) / n:.0f} + {stats.generated / n:.0f}, "
            f"floor {sum(longest.values()) / n:.0f} + {stats.generated / n:.0f} (each dialogue once + generated)")


def qwen_shaped(device, dtype, **special_tokens):
    """A randomly initialised model with Qwen2.5-0.5B-Instruct's exact configuration (width 896, 24 layers,
    vocabulary 151,936, tied embeddings), for where the real weights cannot be fetched."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         tie_word_embeddings=True, rope_theta=1000000.0, **special_tokens)
    return Qwen2ForCausalLM(config).to(device=device, dtype=dtype)


def random_examples(n, seq_len, vocab, seed, supervised_from):
    """n training examples of random token ids, labels on positions from `supervised_from` on."""
    import torch

    from adaptcommand.model.training import IGNORE

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(10, vocab, (seq_len,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * supervised_from + ids[supervised_from:]})
    return out
