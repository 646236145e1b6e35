import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from adaptcommand.data.demo_data import generate

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT.parent / "shared" / "data" / "edgewisepersona_sample" / "dialogues.jsonl"
ARCHS = ("llama", "qwen2")  # the embedded demo model's architecture and the real study's (Qwen2.5)

# `datasets` caches tokenized training examples; the tests (and the scripts they start) use a throwaway cache
_DATASETS_CACHE = tempfile.mkdtemp(prefix="adaptcommand-test-datasets-")
atexit.register(shutil.rmtree, _DATASETS_CACHE, ignore_errors=True)
os.environ["HF_DATASETS_CACHE"] = _DATASETS_CACHE

# Under pytest-xdist (`make test` runs one worker per core: two on 2 cores) each worker, and every script it starts, gets its
# share of the cores: two workers of two threads each on two cores slow each other down.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


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
    """The real sample (../shared); missing it skips a local run but fails CI (CI=true), never silently."""
    if not SAMPLE.is_file():
        if os.environ.get("CI") == "true":
            pytest.fail(f"real sample not found at {SAMPLE}: CI must run the real-wording tests")
        pytest.skip(f"real sample not found at {SAMPLE}")
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines()]


def build_tiny_model(folder, arch="llama", seed=0):
    """A randomly initialised 2-layer model with SmolLM2's real tokenizer and chat template.

    arch "llama" is the embedded demo model's architecture (SmolLM2); "qwen2" the real study's
    (Qwen2.5: biases on q/k/v, tied embeddings).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    from adaptcommand.model.modeling import embedded_tokenizer

    tokenizer = embedded_tokenizer()
    torch.manual_seed(seed)
    config_class, model_class = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
    config = config_class(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                          bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                          pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)
    model = model_class(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session", params=ARCHS)
def tiny_arch_dir(request, tmp_path_factory):
    """A tiny model of each architecture the project must run: the tests using it run once per arch."""
    return build_tiny_model(tmp_path_factory.mktemp(f"tiny_{request.param}"), arch=request.param)


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    return model, tokenizer


@pytest.fixture(scope="session")
def demo_files(tmp_path_factory):
    """Cleaned dialogues and splits for 3 demo personas x 10 sessions, plus the loaded objects."""
    from adaptcommand.data.cleaning import clean
    from adaptcommand.data.splits import make_splits

    folder = tmp_path_factory.mktemp("demo")
    dialogs, _, problems = clean(write_raw(folder / "raw", *generate(3, 10, seed=7)))
    assert not problems
    (folder / "dialogs.jsonl").write_text("".join(json.dumps(d) + "\n" for d in dialogs))
    splits = as_another_tool_writes_it(make_splits(dialogs, min_dialogues=5))
    (folder / "splits.json").write_text(json.dumps(splits, indent=1))
    return {"dialogs_path": folder / "dialogs.jsonl", "splits_path": folder / "splits.json",
            "dialogs": dialogs, "splits": splits}


def as_another_tool_writes_it(splits):
    """A split in the documented shape but not as create_splits.py writes it: personas and indices
    out of session order, and an `online` list that overlaps `train` without being its tail.
    Every script's end-to-end test reads its split from this."""
    return {persona: {"test": entry["test"][::-1], "train": entry["train"][::-1], "val": entry["val"][::-1],
                      "online": entry["train"][1::2]}
            for persona, entry in sorted(splits.items(), reverse=True)}


class BagOfWordsEmbedder:
    """A deterministic stand-in for SentenceTransformer.encode: normalised word-count vectors."""

    def __init__(self, dim=512):
        self.dim = dim

    def encode(self, texts, normalize_embeddings=True, **_):
        import zlib

        import numpy as np

        out = np.zeros((len(texts), self.dim))
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, zlib.crc32(word.encode()) % self.dim] += 1
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(norms == 0, 1, norms)
