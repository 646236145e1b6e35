"""Write a synthetic EdgeWisePersona-format dataset (characters/routines/sessions.jsonl).

    python scripts/make_demo_data.py --out_dir data/demo/raw --personas 8 --seed 0
    python scripts/make_demo_data.py --personas 20 --report        # wording rates beside the real sample's

By default the data talks like the real dataset: the assistant mostly asks and the user states the
values, users name their activities and some have a voice of their own, at the rates of the real
sample (--report measures both). The dials below plant a known answer for control studies:
--proactive_share 0.6 --identity_cues none (per-user memory pays, and wording cannot tell users
apart), or --shared_preferences (nothing private to learn). The generator (adaptcommand/data/demo_data.py)
also keeps the published statistics, which it prints beside the demo's.
"""

import argparse
from pathlib import Path

from adaptcommand.data.data_io import UserError, run_cli, write_jsonl
from adaptcommand.data.demo_data import (
    IDENTITY_CUES,
    REAL_PROACTIVE_SHARE,
    WordingOptions,
    generate,
    print_statistics,
    statistics,
)
from adaptcommand.evaluation.wording import (
    RATE_LABELS,
    identity_accuracy,
    opening_excerpts,
    read_sample,
    repeated_references,
    wording_rates,
)

REAL_SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "edgewisepersona_sample" / "dialogues.jsonl"


def print_report(sessions, sample_path):
    """Wording rates of the demo's first five messages per session beside the real sample's."""
    demo = wording_rates(opening_excerpts(sessions))
    real = wording_rates(read_sample(sample_path)) if sample_path.is_file() else None
    print(f"\nwording (first five messages of each session; real: {sample_path if real else 'sample not found'})")
    print(f"{'rate':<58}{'real':>8}{'demo':>8}")
    for key, label in RATE_LABELS.items():
        real_text = f"{getattr(real, key):.2f}" if real else "n/a"
        print(f"{label:<58}{real_text:>8}{getattr(demo, key):>8.2f}")
    accuracy = identity_accuracy(sessions) if len(sessions) > 1 else None
    print("persona identified from wording (nearest centroid on word counts, test-split user messages): "
          + (f"{accuracy:.3f} (chance {1 / len(sessions):.3f})" if accuracy is not None
             else "n/a (needs 2 personas and 2 sessions each)"))
    print(f"test-split assistant replies found word for word in a train dialogue: {repeated_references(sessions):.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", help="where to write the three files (optional with --report)")
    parser.add_argument("--personas", type=int, default=8, help="how many users")
    parser.add_argument("--sessions", type=int, default=50, help="sessions per user (the real data has 50)")
    parser.add_argument("--seed", type=int, default=0, help="data seed: other seeds give other users and routines")
    parser.add_argument("--identity_cues", choices=IDENTITY_CUES, default="real",
                        help="how much the wording tells users apart: none (voices, activities and small talk "
                             "shared by all users), real (about as often as in the real sample: users mention "
                             "their own activities, some speak in a voice of their own), strong (every user, "
                             "every message). Default: real")
    parser.add_argument("--proactive_share", type=float, default=REAL_PROACTIVE_SHARE,
                        help="in routine-driven sessions, how often the assistant volunteers the user's routine "
                             "values instead of asking for the ones the request left open (0..1). The default "
                             f"{REAL_PROACTIVE_SHARE} gives the real sample's rate of assistant messages stating "
                             "values the user never gave (about 0.07); higher plants more per-user signal")
    parser.add_argument("--shared_preferences", action="store_true",
                        help="every user gets the same routines (triggers and values): nothing private is left "
                             "to learn, so per-user adapters cannot beat a unified one (the negative control)")
    parser.add_argument("--report", action="store_true",
                        help="print the wording rates beside the real sample's, and how well wording alone "
                             "identifies the persona")
    parser.add_argument("--real_sample", type=Path, default=REAL_SAMPLE,
                        help="the real excerpts the report compares with (default: ../shared/data/edgewisepersona_sample)")
    args = parser.parse_args()
    if args.personas < 1 or args.sessions < 1:
        parser.error("--personas and --sessions must be at least 1")
    if not 0 <= args.proactive_share <= 1:
        parser.error(f"--proactive_share must be between 0 and 1, got {args.proactive_share}")
    if not args.out_dir and not args.report:
        parser.error("give --out_dir (and/or --report)")
    if args.report and args.real_sample != REAL_SAMPLE and not args.real_sample.is_file():
        raise UserError(f"{args.real_sample}: real sample not found")
    options = WordingOptions(args.identity_cues, args.proactive_share, args.shared_preferences)
    characters, routines, sessions = generate(args.personas, args.sessions, args.seed, options)
    if args.out_dir:
        out = Path(args.out_dir)
        write_jsonl(out / "characters.jsonl", characters)
        write_jsonl(out / "routines.jsonl", routines)
        write_jsonl(out / "sessions.jsonl", sessions)
        print(f"wrote {args.personas} personas x {args.sessions} sessions to {out}/ ({options})")
    print_statistics(statistics(routines, sessions))
    if args.report:
        print_report(sessions, args.real_sample)


if __name__ == "__main__":
    run_cli(main)
