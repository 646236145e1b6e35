"""Generated replies checkpointed to a JSONL file, so an interrupted evaluation resumes where it stopped.

Each line is one reply: its split, arm, seed, persona, dialogue and turn, the reply, and a
fingerprint of everything that made it: the exact prompt text, the model, the generation settings
and the hashes of the adapter files it ran with. Lines are appended and flushed as each batch
finishes, so `kill -9` loses at most the batch in flight (a torn last line is skipped on reading).
A rerun reuses a reply only when its fingerprint matches; anything that changed is generated
again. Metrics are always computed from the replies, never stored, so a new metric needs no new
generations. Several processes write one file each (`predictions.rank<i>.jsonl`) and read them all.
"""

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from adaptcommand.model.config import as_dict
from adaptcommand.model.generation import generate_texts

KEY_FIELDS = ("split", "arm", "seed", "dialog_index", "turn_index")


@functools.lru_cache(maxsize=None)
def _bytes_hash(path, modified_ns, size):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_hash(path):
    """sha256 of a file's bytes, computed once per path, modification time and size."""
    stat = Path(path).stat()
    return _bytes_hash(str(path), stat.st_mtime_ns, stat.st_size)


def adapter_hash(folder):
    """The hash of an adapter folder's config and weights ('' for no adapter)."""
    if folder is None:
        return ""
    folder = Path(folder)
    return file_hash(folder / "adapter_config.json") + file_hash(folder / "adapter_model.safetensors")


def fingerprint(prompt, model_name, gen_cfg, adapters=""):
    """What a reply depends on, hashed: the prompt text, the model, the generation settings, the adapters."""
    text = json.dumps([prompt, model_name, {k: v for k, v in sorted(as_dict(gen_cfg).items()) if k != "batch_size"}, adapters])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


@dataclass
class PredictionStore:
    """The predictions file of an output folder: what is there, and appending to it."""
    folder: Path
    rank: int = None
    stored: dict = field(default_factory=dict)
    reused: int = 0
    changed: int = 0
    generated: int = 0

    @classmethod
    def open(cls, folder, fresh=False, rank=None):
        """The store of `folder`; with fresh, what is there is ignored and replaced."""
        store = cls(Path(folder), rank)
        store.folder.mkdir(parents=True, exist_ok=True)
        if fresh:
            for path in store.folder.glob("predictions*.jsonl"):
                path.unlink()
        for path in sorted(store.folder.glob("predictions*.jsonl")):
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by an interruption
                store.stored[tuple(row[k] for k in KEY_FIELDS)] = row
        return store

    @property
    def path(self):
        return self.folder / ("predictions.jsonl" if self.rank is None else f"predictions.rank{self.rank}.jsonl")

    def lookup(self, key, print_):
        """The stored reply for a key if its fingerprint matches, else None (and counted as changed)."""
        row = self.stored.get(key)
        if row is None:
            return None
        if row["fingerprint"] != print_:
            self.changed += 1
            return None
        self.reused += 1
        return row["prediction"]

    def append(self, rows):
        """Add rows ({KEY_FIELDS..., persona_id, prediction, fingerprint}) to the file and flush."""
        with self.path.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
                self.stored[tuple(row[k] for k in KEY_FIELDS)] = row
            f.flush()
        self.generated += len(rows)

    def summary(self):
        return (f"predictions: {self.reused} reused from {self.path.name}, {self.generated} generated"
                + (f" ({self.changed} because their prompt, model, generation settings or adapter changed)"
                   if self.changed else ""))


def generate_or_reuse(model, tokenizer, prompts, gen_cfg, model_name, keys, store, adapter_names=None,
                      adapter_hashes=None, chain_keys=None, desc="generating"):
    """Replies for the prompts: reused from the store where the fingerprint matches, the rest generated
    (batched, caches carried along chains) and appended to the store batch by batch.

    keys: per prompt {split, arm, seed, dialog_index, turn_index, persona_id}.
    """
    prints = [fingerprint(p, model_name, gen_cfg, adapter_hashes[i] if adapter_hashes else "")
              for i, p in enumerate(prompts)]
    replies = [store.lookup(tuple(k[f] for f in KEY_FIELDS), fp) for k, fp in zip(keys, prints)]
    todo = [i for i, r in enumerate(replies) if r is None]

    def save(indices, texts):
        rows = []
        for j, text in zip(indices, texts):
            i = todo[j]
            replies[i] = text
            rows.append({**keys[i], "prediction": text, "fingerprint": prints[i]})
        store.append(rows)

    if todo:
        generate_texts(model, tokenizer, [prompts[i] for i in todo], gen_cfg, desc=desc,
                       adapter_names=[adapter_names[i] for i in todo] if adapter_names else None,
                       chain_keys=[chain_keys[i] for i in todo] if chain_keys else None, on_replies=save)
    return replies
