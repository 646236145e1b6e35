"""JSON configs: one schema of known sections and keys, checked when a config is loaded.

An unknown key or a value of the wrong type is a UserError naming the file and the key, so a typo
("max_new_token") never falls back silently to a default. Every script reads its config through
`load_config`; the sections a script does not use keep their defaults.
"""

import copy
import json
from pathlib import Path

from scripts.data_io import UserError

OPTIONAL_INT = (int, type(None))
OPTIONAL_STR = (str, type(None))
NUMBER = (int, float)

SYSTEM_TEMPLATE = (
    "You are a smart-home assistant. You control the TV (volume, brightness, input source), the AC "
    "(temperature 16-30, mode cool/heat/auto, fan speed 0-3), the lights (brightness, color warm/cool/neutral, "
    "mode static/dynamic), the speaker (volume, equalizer) and the security system (armed, alarm volume). "
    "Answer briefly and state the exact settings you apply."
)

# section -> key -> (allowed types, default)
SCHEMA = {
    "model": {
        "name": (str, "embedded:smollm2-135m-instruct"),
        "device": (str, "auto"),          # auto | cpu | cuda | mps
        "dtype": (str, "auto"),           # auto | float32 | bfloat16 | float16
    },
    "data": {
        "dialogs": (str, "data/cleaned/dialogs_clean.jsonl"),
        "splits": (str, "data/splits/edgesplits.json"),
        "split": (str, "test"),
    },
    "prompt": {
        "system_template": (str, SYSTEM_TEMPLATE),
        "max_context_messages": (int, 10),
        "include_character": (bool, False),
        "retrieved_history": (int, 0),
        "retrieved_max_messages": (int, 6),
    },
    "generation": {
        "max_new_tokens": (int, 96),
        "batch_size": (int, 16),
        "do_sample": (bool, False),
        "temperature": (NUMBER, 0.7),
        "top_p": (NUMBER, 0.9),
        "seed": (int, 0),
    },
    "evaluation": {
        "embedding_model": (str, "embedded:all-minilm-l6-v2"),
        "max_examples": (OPTIONAL_INT, None),
        "sample_outputs": (int, 20),
    },
    "lora": {
        "r": (int, 8),
        "alpha": (int, 16),
        "dropout": (NUMBER, 0.05),
        "target_modules": (list, ["q_proj", "v_proj"]),
    },
    "training": {
        "scope": (str, "per_user"),       # per_user | all | per_user_on_all
        "output_dir": (OPTIONAL_STR, None),
        "unified_adapter": (str, "models/lora_all"),
        "learning_rate": (NUMBER, 5e-4),
        "weight_decay": (NUMBER, 0.01),
        "warmup_ratio": (NUMBER, 0.1),
        "max_grad_norm": (NUMBER, 1.0),
        "epochs": (int, 3),
        "batch_size": (int, 4),
        "max_seq_length": (int, 1024),
        "early_stopping_patience": (int, 1),
        "seed": (int, 0),
        "parallel_personas": (int, 1),    # K > 1: train K personas' adapters in one batched pass
        "micro_batch_size": (int, 0),     # with K > 1: sequences per forward pass (0: the whole step)
    },
    "arms": {
        "names": (list, ["baseline", "character", "retrieval", "lora_all", "lora_per_user", "lora_per_user_on_all"]),
        "lora_all": (str, "models/lora_all"),
        "lora_per_user": (str, "models/lora_per_user"),
        "lora_per_user_on_all": (str, "models/lora_per_user_on_all"),
        "retrieved_history": (int, 2),
        "best_on_val": (bool, True),
        "primary_metric": (str, "param_f1"),
        "n_bootstrap": (int, 2000),
    },
}

CHOICES = {
    ("model", "device"): {"auto", "cpu", "cuda", "mps"},
    ("model", "dtype"): {"auto", "float32", "bfloat16", "float16"},
    ("data", "split"): {"train", "val", "test"},
    ("training", "scope"): {"per_user", "all", "per_user_on_all"},
}


def defaults():
    return {section: {key: copy.deepcopy(default) for key, (_, default) in keys.items()}
            for section, keys in SCHEMA.items()}


def _type_ok(value, types):
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        return False  # JSON true is not a number
    return isinstance(value, types)


def _type_name(types):
    types = types if isinstance(types, tuple) else (types,)
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", type(None): "null"}
    return " or ".join(names[t] for t in types)


def validate(raw, source):
    """Defaults overlaid with `raw`; UserError for any unknown section/key or wrongly typed value."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a config must be a JSON object of sections")
    config = defaults()
    for section, values in raw.items():
        if section == "description":
            continue
        if section not in SCHEMA:
            raise UserError(f"{source}: unknown section {section!r} (known: {', '.join(SCHEMA)})")
        if not isinstance(values, dict):
            raise UserError(f"{source}: section {section!r} must be an object")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                raise UserError(f"{source}: unknown key {section}.{key} (known: {', '.join(SCHEMA[section])})")
            types = SCHEMA[section][key][0]
            if not _type_ok(value, types):
                raise UserError(f"{source}: {section}.{key} must be {_type_name(types)}, got {json.dumps(value)}")
            allowed = CHOICES.get((section, key))
            if allowed and value not in allowed:
                raise UserError(f"{source}: {section}.{key} must be one of {sorted(allowed)}, got {value!r}")
            config[section][key] = value
    return config


def load_config(path):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    config = validate(raw, str(path))
    config["_source"] = str(path)
    return config
