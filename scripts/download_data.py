"""Fetch the real EdgeWisePersona dataset from the Hugging Face Hub into the three raw files.

    python scripts/download_data.py --out_dir data/raw

Without network (as on the offline machines) it fails with one line saying how to get the files.
"""

import argparse
import shutil
from pathlib import Path

from adaptcommand.data.data_io import UserError, atomic_path, run_cli
from adaptcommand.data.schema import RAW_FILES

REPO_ID = "TCLResearchEurope/EdgeWisePersona"


def download(out_dir, repo_id=REPO_ID):
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=["*.jsonl", "**/*.jsonl"]))
    except Exception as err:  # offline: LocalEntryNotFoundError; no such repo: RepositoryNotFoundError
        raise UserError(
            f"could not download {repo_id} from the Hugging Face Hub ({type(err).__name__}); "
            f"on a machine with network run this script there, or copy {', '.join(RAW_FILES)} "
            f"from https://huggingface.co/datasets/{repo_id} into {out_dir}/") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in RAW_FILES:
        found = sorted(folder.rglob(name))
        if not found:
            raise UserError(f"{repo_id} has no {name}; the dataset layout changed, copy the files by hand")
        with atomic_path(out_dir / name) as tmp:
            shutil.copyfile(found[0], tmp)
    return [out_dir / name for name in RAW_FILES]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out_dir", default="data/raw", help="where to write characters/routines/sessions.jsonl")
    parser.add_argument("--repo_id", default=REPO_ID, help="the dataset on the Hugging Face Hub")
    args = parser.parse_args()
    for path in download(args.out_dir, args.repo_id):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    run_cli(main)
