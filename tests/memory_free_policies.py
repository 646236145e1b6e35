"""Routine F1 (macro over personas, test split) of reply policies that need no model: one JSON line per data folder.

    .venv/bin/python tests/memory_free_policies.py FOLDER [FOLDER ...]

Each FOLDER holds `c.jsonl` (clean_data.py's output) and `s.json` (create_splits.py's), e.g.
    make_demo_data.py --out_dir F/raw --personas 20 --sessions 50 --seed 5 [--proactive_share 0.6 --identity_cues none]
    clean_data.py --raw_dir F/raw --output F/c.jsonl; create_splits.py --input F/c.jsonl --output F/s.json
design.md ("What the metric-integrity fix changed") gives its figures. The old figures there come from the
same script run in a checkout of commit 8a84cdb (the library was `scripts.*` then) with OLD=1 and
PYTHONPATH=<that checkout>.
"""
import json
import os
import random
import sys
from collections import Counter, defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import BagOfWordsEmbedder  # noqa: E402

try:
    if os.environ.get("OLD"):  # the pre-move library (scripts.*), for the old figures
        raise ImportError
    from adaptcommand.data.data_io import load_dialogs
    from adaptcommand.data.schema import DEVICES
    from adaptcommand.data.splits import load_splits
    from adaptcommand.evaluation.action_metrics import prescribed_settings
    from adaptcommand.evaluation.evaluation import TurnScorer, aggregate_per_persona, collect_turns
    from adaptcommand.evaluation.routine_knowledge import describe_settings, policy_reply, usual_settings
except ImportError:
    from scripts.action_metrics import prescribed_settings
    from scripts.data_io import load_dialogs
    from scripts.evaluation import TurnScorer, aggregate_per_persona, collect_turns
    from scripts.routine_knowledge import describe_settings, policy_reply, usual_settings
    from scripts.schema import DEVICES
    from scripts.splits import load_splits

def run(folder):
    dialogs = load_dialogs(f"{folder}/c.jsonl"); splits = load_splits(f"{folder}/s.json", dialogs)
    turns = collect_turns(dialogs, {p: s["test"] for p, s in splits.items()})
    scorer = TurnScorer(BagOfWordsEmbedder())
    usual = usual_settings(dialogs, {p: s["train"] for p, s in splits.items()})
    counts = defaultdict(Counter)
    for p, s in splits.items():
        for i in s["train"]:
            d = dialogs[i]
            for dev, ps in (prescribed_settings(d.get("meta"), d.get("routines") or [], d.get("applied_routines")) or {}).items():
                for k, v in ps.items(): counts[(dev, k)][v] += 1
    ranked = {key: sorted(c, key=lambda v: (-c[v], v)) for key, c in counts.items()}
    rng = random.Random(0)
    def actions(t): return scorer.dialog_state(dialogs, t["dialog_index"])[0]
    def talked(t): return {d for a in actions(t)[: t["turn_index"] + 1] for d in a}
    def rotate(t, devs):
        j = t["turn_index"] // 2
        return describe_settings({d: {k: ranked[(d, k)][j % min(3, len(ranked[(d, k)]))] for k in DEVICES[d] if (d, k) in ranked} for d in devs})
    def last(t, role):
        m = dialogs[t["dialog_index"]]["messages"][: t["turn_index"]]
        return next((x["text"] for x in reversed(m) if x["role"] == role), "Okay.")
    def random_guess(t):
        return describe_settings({d: {k: rng.choice([True, False]) if spec[0] == "bool" else rng.choice(spec[1]) if spec[0] == "cat" else rng.randint(spec[1], spec[2]) for k, spec in DEVICES[d].items()} for d in sorted(talked(t))})
    pol = lambda arm: (lambda t: policy_reply(arm, dialogs[t["dialog_index"]], t["turn_index"], actions(t), usual))
    policies = {
        "everyone_usual": pol("everyone_usual"), "user_usual": pol("user_usual"), "echo": pol("echo"),
        "echo_assistant": lambda t: last(t, "assistant"),
        "rotate_usual": lambda t: rotate(t, talked(t)),
        "rotate_usual_every_device": lambda t: rotate(t, DEVICES),
        "echo_last_4_messages": lambda t: " ".join(x["text"] for x in dialogs[t["dialog_index"]]["messages"][max(0, t["turn_index"] - 4):t["turn_index"]]) or "Okay.",
        "random_values": random_guess,
    }
    out = {}
    for name, f in policies.items():
        per = aggregate_per_persona(scorer.score(dialogs, turns, [f(t) for t in turns]))
        vals = [m["routine_f1"] for m in per.values() if m.get("routine_f1") is not None]
        out[name] = round(sum(vals) / len(vals), 3)
    return out

for folder in sys.argv[1:]:
    print(json.dumps({"data": folder, **run(folder)}))
