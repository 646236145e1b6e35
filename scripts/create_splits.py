"""Split each persona's dialogues in session order into train/val/test (+ an `online` slice).

    python scripts/create_splits.py --input data/cleaned/dialogs_clean.jsonl --output data/splits/edgesplits.json

Temporal per persona: the earliest sessions train, the next validate, the latest test, so no
model ever sees a persona's future. Indices point into the cleaned file (0-based line numbers).
`online` is the last K train dialogues of each persona, for online/incremental-update studies.
A `split_report.json` beside the output records the checks (overlap, coverage, order, balance).
"""

import argparse
from collections import defaultdict
from pathlib import Path

from scripts.data_io import UserError, load_dialogs, run_cli, write_json


def split_sizes(n, ratios):
    """(train, val, test) counts for n dialogues; val and test get at least one each."""
    n_val = max(1, round(n * ratios[1]))
    n_test = max(1, round(n * ratios[2]))
    return n - n_val - n_test, n_val, n_test


def make_splits(dialogs, ratios=(0.6, 0.2, 0.2), online_k=5, min_dialogues=10):
    by_persona = defaultdict(list)
    for index, dialog in enumerate(dialogs):
        by_persona[dialog["persona_id"]].append(index)
    too_few = {p: len(ix) for p, ix in by_persona.items() if len(ix) < min_dialogues}
    if too_few:
        listed = ", ".join(f"{p} ({n})" for p, n in sorted(too_few.items())[:10])
        raise UserError(f"{len(too_few)} persona(s) have fewer than {min_dialogues} dialogues: {listed}; "
                        f"lower --min_dialogues (at least 3) to split them anyway")
    per_persona = {}
    for persona, indices in sorted(by_persona.items()):
        indices.sort(key=lambda i: (dialogs[i]["session_id"], i))
        n_train, n_val, _ = split_sizes(len(indices), ratios)
        train = indices[:n_train]
        per_persona[persona] = {"train": train, "val": indices[n_train:n_train + n_val],
                                "test": indices[n_train + n_val:], "online": train[-online_k:] if online_k else []}
    splits = {name: [i for p in per_persona.values() for i in p[name]] for name in ("train", "val", "test", "online")}
    return {**splits, "ratios": list(ratios), "online_k": online_k, "per_persona": per_persona}


def validate_splits(splits, dialogs):
    """The report's checks; every boolean must be true for a usable split."""
    train, val, test = (set(splits[k]) for k in ("train", "val", "test"))
    ordered = all(
        max(dialogs[i]["session_id"] for i in p["train"]) < min(dialogs[i]["session_id"] for i in p["val"])
        and max(dialogs[i]["session_id"] for i in p["val"]) < min(dialogs[i]["session_id"] for i in p["test"])
        for p in splits["per_persona"].values())
    sizes = {k: [len(p[k]) for p in splits["per_persona"].values()] for k in ("train", "val", "test")}
    return {
        "no_overlap": not (train & val or train & test or val & test),
        "complete": len(train | val | test) == len(dialogs),
        "temporal_order": ordered,
        "online_within_train": set(splits["online"]) <= train,
        "personas": len(splits["per_persona"]),
        "counts": {k: len(splits[k]) for k in ("train", "val", "test", "online")},
        "per_persona_min_max": {k: [min(v), max(v)] for k, v in sizes.items()},
    }


def parse_ratios(text):
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--ratios {text!r}: expected three numbers like 0.6,0.2,0.2") from None
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise UserError(f"--ratios {text!r}: need three positive numbers that sum to 1")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="cleaned dialogues (clean_data.py output)")
    parser.add_argument("--output", required=True)
    parser.add_argument("--ratios", default="0.6,0.2,0.2", help="train,val,test shares")
    parser.add_argument("--online_k", type=int, default=5, help="last K train dialogues per persona")
    parser.add_argument("--min_dialogues", type=int, default=10, help="fewer dialogues than this is an error")
    args = parser.parse_args()
    if args.min_dialogues < 3:
        raise UserError("--min_dialogues must be at least 3 (one dialogue each for train, val and test)")
    dialogs = load_dialogs(args.input)
    splits = make_splits(dialogs, parse_ratios(args.ratios), args.online_k, args.min_dialogues)
    report = validate_splits(splits, dialogs)
    splits["source"] = str(args.input)
    output = Path(args.output)
    write_json(output, splits)
    write_json(output.parent / "split_report.json", report)
    c = report["counts"]
    print(f"wrote {output}: {report['personas']} personas, train {c['train']} / val {c['val']} / "
          f"test {c['test']} dialogues (online {c['online']})")
    print("checks: " + ", ".join(f"{k}={report[k]}" for k in ("no_overlap", "complete", "temporal_order")))
    return 0


if __name__ == "__main__":
    run_cli(main)
