"""Shared set-up for the benchmarks: a small demo dataset built in memory."""

import resource

from scripts.clean_data import clean
from scripts.create_splits import make_splits
from scripts.make_demo_data import generate


def demo_dataset(tmp_dir, personas=4, sessions=20, seed=0):
    """(dialogs, splits) for a fresh demo dataset written under tmp_dir."""
    from scripts.data_io import write_jsonl

    characters, routines, sessions_rows = generate(personas, sessions, seed)
    for name, rows in (("characters", characters), ("routines", routines), ("sessions", sessions_rows)):
        write_jsonl(f"{tmp_dir}/{name}.jsonl", rows)
    dialogs, _, problems = clean(tmp_dir)
    assert not problems, problems
    return dialogs, make_splits(dialogs, min_dialogues=5)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
