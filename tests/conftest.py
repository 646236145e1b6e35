import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.make_demo_data import generate

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "edgewisepersona_sample" / "dialogues.jsonl"


def write_raw(folder, characters, routines, sessions):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("characters", characters), ("routines", routines), ("sessions", sessions)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def run_script(name, *args):
    """Run one of the CLI scripts as a user would; returns the CompletedProcess."""
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="session")
def demo_rows():
    """(characters, routines, sessions) for 6 demo personas x 20 sessions."""
    return generate(6, 20, seed=3)


@pytest.fixture()
def demo_raw(tmp_path, demo_rows):
    return write_raw(tmp_path / "raw", *demo_rows)


@pytest.fixture(scope="session")
def sample_dialogues():
    if not SAMPLE.is_file():
        pytest.skip(f"real sample not found at {SAMPLE}")
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]
