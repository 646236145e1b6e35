"""Shared set-up for the benchmarks: a small demo dataset built in memory, and its training examples."""

import resource

from adaptcommand.data.cleaning import clean
from adaptcommand.data.data_io import write_jsonl
from adaptcommand.data.demo_data import generate
from adaptcommand.data.splits import make_splits
from adaptcommand.model.training import dialog_example


def demo_dataset(tmp_dir, personas=4, sessions=20, seed=0):
    """(dialogs, splits) for a fresh demo dataset written under tmp_dir."""
    characters, routines, sessions_rows = generate(personas, sessions, seed)
    for name, rows in (("characters", characters), ("routines", routines), ("sessions", sessions_rows)):
        write_jsonl(f"{tmp_dir}/{name}.jsonl", rows)
    dialogs, _, problems = clean(tmp_dir)
    assert not problems, problems
    return dialogs, make_splits(dialogs, min_dialogues=5)


def training_examples(tokenizer, dialogs, cfg):
    """Every dialogue's training example (row i = dialogue i), as scripts/training.tokenized_dialogs builds them."""
    from datasets import Dataset

    return Dataset.from_list([dialog_example(tokenizer, d, cfg["prompt"], cfg["training"]["max_seq_length"])
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
