"""Validate the three raw EdgeWisePersona files and merge them into one dialogue per line.

    python scripts/clean_data.py --raw_dir data/raw --output data/cleaned/dialogs_clean.jsonl

Line i of characters.jsonl, routines.jsonl and sessions.jsonl is persona i (`persona_000`, ...).
Every record is checked against the schema. Strict by default: any problem prints one line naming
file and line, exit code 2, and nothing is written. With --lenient the bad records are skipped
(a bad character or routines line drops that persona; a bad session drops that session) and
listed in the report. Whitespace is normalised, empty messages are dropped, and dialogues left
without a user and an assistant message are dropped as degenerate; all of it is counted in
`cleaning_report.json` beside the output.
"""

import argparse
import sys
from pathlib import Path

from adaptcommand.data.cleaning import clean
from adaptcommand.data.data_io import run_cli, write_json, write_jsonl

MAX_PRINTED_PROBLEMS = 20


def print_problems(problems, stream):
    for line in problems[:MAX_PRINTED_PROBLEMS]:
        print(line, file=stream)
    if len(problems) > MAX_PRINTED_PROBLEMS:
        print(f"... and {len(problems) - MAX_PRINTED_PROBLEMS} more problems", file=stream)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--raw_dir", required=True, help="folder with characters.jsonl, routines.jsonl, sessions.jsonl")
    parser.add_argument("--output", required=True, help="the cleaned file to write (one dialogue per line)")
    parser.add_argument("--lenient", action="store_true", help="skip bad records instead of failing")
    args = parser.parse_args()
    dialogs, report, problems = clean(args.raw_dir, args.lenient)
    if problems and not (args.lenient and dialogs):
        print_problems(problems, sys.stderr)
        print(f"error: {len(problems)} problem(s) in {args.raw_dir}; nothing written"
              + ("" if args.lenient else " (--lenient skips bad records)"), file=sys.stderr)
        return 2
    if problems:
        print_problems(problems, sys.stderr)
        print(f"warning: skipped {report['records_skipped']} bad record(s)", file=sys.stderr)
    output = Path(args.output)
    write_jsonl(output, dialogs)
    write_json(output.parent / "cleaning_report.json", report)
    if report["personas_without_dialogues"]:
        print(f"warning: {len(report['personas_without_dialogues'])} persona(s) with no usable session left out: "
              f"{', '.join(report['personas_without_dialogues'])}", file=sys.stderr)
    print(f"wrote {len(dialogs)} dialogues from {report['personas_kept']} personas to {output}")
    print(f"dropped: {report['empty_messages_dropped']} empty messages, "
          f"{report['degenerate_dialogues_dropped']} degenerate dialogues, {report['records_skipped']} bad records")
    return 0


if __name__ == "__main__":
    run_cli(main)
