"""Write a synthetic EdgeWisePersona-format dataset (characters/routines/sessions.jsonl).

    python scripts/make_demo_data.py --out_dir data/demo/raw --personas 8 --seed 0

The generator (scripts/demo_data.py) keeps the real raw format and the published statistics,
which it prints beside the demo's.
"""

import argparse
from pathlib import Path

from scripts.data_io import run_cli, write_jsonl
from scripts.demo_data import generate, print_statistics, statistics


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out_dir", required=True)
    parser.add_argument("--personas", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.personas < 1 or args.sessions < 1:
        parser.error("--personas and --sessions must be at least 1")
    characters, routines, sessions = generate(args.personas, args.sessions, args.seed)
    out = Path(args.out_dir)
    write_jsonl(out / "characters.jsonl", characters)
    write_jsonl(out / "routines.jsonl", routines)
    write_jsonl(out / "sessions.jsonl", sessions)
    print(f"wrote {args.personas} personas x {args.sessions} sessions to {out}/")
    print_statistics(statistics(routines, sessions))


if __name__ == "__main__":
    run_cli(main)
