"""Split each persona's dialogues in session order into train/val/test (+ an `online` slice).

    python scripts/create_splits.py --input data/cleaned/dialogs_clean.jsonl --output data/splits/edgesplits.json

Temporal per persona: the earliest sessions train, the next validate, the latest test, so no
model ever sees a persona's future. The output is the documented format, persona id ->
{train, val, test, online} indices into the cleaned file (0-based line numbers); `online` is the
last K train dialogues of each persona, for incremental-update studies. Ratios, source and the
checks (overlap, coverage, order, balance) go to `split_report.json` beside it.
"""

import argparse
from pathlib import Path

from adaptcommand.data.data_io import UserError, load_dialogs, run_cli, write_json
from adaptcommand.data.splits import make_splits, split_report


def parse_ratios(text):
    try:
        ratios = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise UserError(f"--ratios {text!r}: expected three numbers like 0.6,0.2,0.2") from None
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise UserError(f"--ratios {text!r}: need three positive numbers that sum to 1")
    return ratios


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", required=True, help="cleaned dialogues (clean_data.py output)")
    parser.add_argument("--output", required=True, help="the split file to write (edgesplits.json)")
    parser.add_argument("--ratios", default="0.6,0.2,0.2", help="train,val,test shares")
    parser.add_argument("--online_k", type=int, default=5, help="last K train dialogues per persona")
    parser.add_argument("--min_dialogues", type=int, default=10, help="fewer dialogues than this is an error")
    args = parser.parse_args()
    if args.min_dialogues < 3:
        raise UserError("--min_dialogues must be at least 3 (one dialogue each for train, val and test)")
    ratios = parse_ratios(args.ratios)
    dialogs = load_dialogs(args.input)
    splits = make_splits(dialogs, ratios, args.online_k, args.min_dialogues)
    report = {"source": str(args.input), "ratios": list(ratios), "online_k": args.online_k,
              **split_report(splits, dialogs)}
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
