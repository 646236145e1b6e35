"""JSON configs: one schema of known sections and keys, checked when a config is loaded.

An unknown key, a value of the wrong type, a choice that is not one of the allowed ones or a
number out of range is a UserError naming the file and the key, so a typo ("max_new_token",
"primary_metric": "parm_f1") never falls back silently to a default. Every script reads its
config through `load_config`; the sections a script does not use keep their defaults. Each value
has one key: adapter folders live in `adapters` (training writes there, evaluation reads there),
the retrieval depth in `prompt.retrieved_history`.
"""

import copy
import json
from pathlib import Path

from adaptcommand.data.data_io import UserError

OPTIONAL_INT = (int, type(None))
NUMBER = (int, float)
OPTIONAL_NUMBER = (int, float, type(None))

SYSTEM_TEMPLATE = (
    "You are a smart-home assistant. You control the TV (volume, brightness, input source), the AC "
    "(temperature 16-30, mode cool/heat/auto, fan speed 0-3), the lights (brightness, color warm/cool/neutral, "
    "mode static/dynamic), the speaker (volume, equalizer) and the security system (armed, alarm volume). "
    "Answer briefly and state the exact settings you apply."
)

PROMPT_ARMS = ("baseline", "character", "retrieval")
# reference replies that need no model (adaptcommand/evaluation/routine_knowledge.py)
POLICY_ARMS = ("silent", "echo", "echo_assistant", "rotate_usual", "oracle", "user_usual", "everyone_usual")
LORA_ARMS = ("lora_all", "lora_per_user", "lora_per_user_on_all")
# the more-training comparator: the unified adapter trained further on everyone's dialogues with the
# per-user-on-unified recipe, so that arm's gain can be split into more training and per-user memory
COMPARATOR_ARM = "lora_all_on_all"
# per-persona metrics the evaluation reports, any of which a config may name as arms.primary_metric
PERSONA_METRICS = ("routine_f1", "routine_recall", "routine_precision", "param_f1", "param_given_f1",
                   "param_private_f1", "param_precision", "param_recall", "device_f1", "device_precision",
                   "device_recall", "numerical_exact", "numerical_within1", "numerical_coverage",
                   "categorical_accuracy", "categorical_coverage", "embedding_similarity", "rouge1", "rouge2", "rougeL",
                   "cloze_top1")
# prefix-tuning adapters (PEFT PrefixTuningConfig): trained by train_lora_per_user.py's prefix scopes
PREFIX_ARMS = ("prefix_all", "prefix_per_user")
ADAPTER_ARMS = LORA_ARMS + (COMPARATOR_ARM,) + PREFIX_ARMS
UNIFIED_ARMS = ("lora_all", COMPARATOR_ARM, "prefix_all")  # one adapter over every persona's dialogues
ON_UNIFIED_ARMS = ("lora_per_user_on_all", COMPARATOR_ARM)  # trained on the unified adapter of their seed, merged in
SCOPE_ARM = {"all": "lora_all", "per_user": "lora_per_user", "per_user_on_all": "lora_per_user_on_all",
             "all_on_all": COMPARATOR_ARM, "prefix_all": "prefix_all", "prefix_per_user": "prefix_per_user"}

# section -> key -> (allowed types, default)
SCHEMA = {
    "model": {
        "name": (str, "embedded:smollm2-135m-instruct"),
        "device": (str, "auto"),
        "dtype": (str, "auto"),
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
        "retrieval": (bool, False),            # retrieved past dialogues of the same user in the system prompt
        "retrieved_history": (int, 2),         # how many, when retrieval is on
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
        "cloze": (bool, True),                 # the preference cloze (adaptcommand/evaluation/cloze.py) for every model arm
        "train_sessions": (int, 0),            # memorisation check: baseline and adapter arms on each persona's last N routine-driven train sessions
        "persona_group": (int, 32),            # personas whose adapters are served at once (adaptcommand/model/serving.py)
    },
    "lora": {
        "r": (int, 8),
        "alpha": (int, 16),
        "dropout": (NUMBER, 0.05),
        "target_modules": (list, ["q_proj", "v_proj"]),
    },
    "prefix": {                            # prefix tuning (the prefix scopes): trained key/value vectors per layer
        "num_virtual_tokens": (int, 20),
        "projection": (bool, False),           # PEFT's prefix_projection: the prefix through a 2-layer MLP
        "learning_rate": (OPTIONAL_NUMBER, None),  # the prefix scopes' own (null: training.learning_rate)
    },
    "training": {
        "scope": (str, "per_user"),
        "learning_rate": (NUMBER, 5e-4),
        "weight_decay": (NUMBER, 0.01),
        "warmup_ratio": (NUMBER, 0.1),
        "max_grad_norm": (NUMBER, 1.0),
        "epochs": (int, 3),                    # the cap on epochs (select_by last: the epochs)
        "unified_epochs": (OPTIONAL_INT, None),  # the unified adapter's cap, if not `epochs` (it sees every persona's data)
        "batch_size": (int, 4),
        "unified_batch_size": (OPTIONAL_INT, None),  # the unified scopes' (all, all_on_all, prefix_all), if not `batch_size`
        "max_seq_length": (int, 1024),
        "early_stopping_patience": (int, 1),
        "select_by": (str, "val_loss"),        # the epoch kept: val_loss | val_knowledge | last (training.py)
        "seeds": (list, [0]),                  # one adapter per seed, each in <arm root>/seed_<s>/
        "loss_on": (str, "assistant"),         # "assistant" (the guide's) or "all": user turns supervised too
        "max_train_sessions": (OPTIONAL_INT, None),  # each persona's first N train sessions only (learning curve)
        "parallel_personas": (int, 1),    # K > 1: train K personas' adapters in one batched pass
        "micro_batch_size": (int, 0),     # with K > 1: sequences per forward pass (0: the whole step)
    },
    "adapters": {                          # where each adapter arm lives: training writes, evaluation reads
        "lora_all": (str, "models/lora_all"),
        "lora_per_user": (str, "models/lora_per_user"),
        "lora_per_user_on_all": (str, "models/lora_per_user_on_all"),
        "lora_all_on_all": (str, "models/lora_all_on_all"),
        "prefix_all": (str, "models/prefix_all"),
        "prefix_per_user": (str, "models/prefix_per_user"),
    },
    "arms": {
        "names": (list, ["echo", "oracle", *PROMPT_ARMS, *LORA_ARMS]),
        "best_on_val": (bool, True),
        "primary_metric": (str, "routine_f1"),
        "n_bootstrap": (int, 2000),
        "min_personas": (int, 10),             # fewer personas than this: the verdict is "too few personas"
    },
}

CHOICES = {
    ("model", "device"): ("auto", "cpu", "cuda", "mps"),
    ("model", "dtype"): ("auto", "float32", "bfloat16", "float16"),
    ("data", "split"): ("train", "val", "test"),
    ("training", "loss_on"): ("assistant", "all"),
    ("training", "select_by"): ("val_loss", "val_knowledge", "last"),
    ("training", "scope"): tuple(SCOPE_ARM),
}

# (section, key) -> (lowest, highest, whether the lowest itself is allowed); None: unbounded
RANGES = {
    ("prompt", "max_context_messages"): (0, None, True),
    ("prompt", "retrieved_history"): (1, None, True),
    ("prompt", "retrieved_max_messages"): (1, None, True),
    ("generation", "max_new_tokens"): (1, None, True),
    ("generation", "batch_size"): (1, None, True),
    ("generation", "temperature"): (0, None, False),
    ("generation", "top_p"): (0, 1, False),
    ("evaluation", "max_examples"): (1, None, True),
    ("evaluation", "sample_outputs"): (0, None, True),
    ("evaluation", "train_sessions"): (0, None, True),
    ("evaluation", "persona_group"): (1, None, True),
    ("prefix", "num_virtual_tokens"): (1, None, True),
    ("prefix", "learning_rate"): (0, None, False),
    ("lora", "r"): (1, None, True),
    ("lora", "alpha"): (1, None, True),
    ("lora", "dropout"): (0, 0.99, True),
    ("training", "learning_rate"): (0, None, False),
    ("training", "weight_decay"): (0, None, True),
    ("training", "warmup_ratio"): (0, 1, True),
    ("training", "max_grad_norm"): (0, None, False),
    ("training", "epochs"): (1, None, True),
    ("training", "unified_epochs"): (1, None, True),
    ("training", "batch_size"): (1, None, True),
    ("training", "unified_batch_size"): (1, None, True),
    ("training", "max_seq_length"): (16, None, True),
    ("training", "early_stopping_patience"): (0, None, True),
    ("training", "max_train_sessions"): (1, None, True),
    ("training", "parallel_personas"): (1, None, True),
    ("training", "micro_batch_size"): (0, None, True),
    ("arms", "n_bootstrap"): (100, None, True),
    ("arms", "min_personas"): (1, None, True),
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


def _range_problem(value, low, high, low_inclusive):
    if value is None:
        return None
    if value < low or (value == low and not low_inclusive) or (high is not None and value > high):
        lower = f">= {low}" if low_inclusive else f"> {low}"
        return f"must be {lower}" + (f" and <= {high}" if high is not None else "") + f", got {value}"
    return None


def _list_problem(section, key, value):
    """Checks of the list-valued keys: non-empty strings (seeds: integers >= 0), known arm names, no repeats."""
    if (section, key) == ("training", "seeds"):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
            return f"must be a non-empty list of integers >= 0, got {json.dumps(value)}"
    elif not value or not all(isinstance(v, str) and v for v in value):
        return "must be a non-empty list of names"
    if len(set(value)) != len(value):
        return f"repeats a name: {value}"
    if (section, key) == ("arms", "names"):
        unknown = [v for v in value if v not in POLICY_ARMS + PROMPT_ARMS + ADAPTER_ARMS]
        if unknown:
            return f"has unknown arm(s) {unknown}; known: {list(POLICY_ARMS + PROMPT_ARMS + ADAPTER_ARMS)}"
    return None


def _metric_problem(name):
    return None if name in PERSONA_METRICS else f"is not a metric; known: {', '.join(PERSONA_METRICS)}"


def validate(raw, source):
    """Defaults overlaid with `raw`; UserError for any unknown, mistyped, unknown-choice or out-of-range value."""
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
                raise UserError(f"{source}: {section}.{key} must be one of {list(allowed)}, got {value!r}")
            problem = None
            if (section, key) in RANGES:
                problem = _range_problem(value, *RANGES[(section, key)])
            elif isinstance(value, list):
                problem = _list_problem(section, key, value)
            elif (section, key) == ("arms", "primary_metric"):
                problem = _metric_problem(value)
            if problem:
                raise UserError(f"{source}: {section}.{key} {problem}")
            config[section][key] = value
    return config


def add_config_arguments(parser):
    """--config FILE and repeatable --set SECTION.KEY=VALUE, which every stage script takes."""
    parser.add_argument("--config", required=True, help="JSON config (configs/)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set training.epochs=1 or "
                             "--set data.dialogs=data/x.jsonl (VALUE is JSON, else a string); repeatable")


def apply_overrides(raw, overrides, source):
    """`raw` with each "section.key=value" of `overrides` set (value parsed as JSON, else kept as text)."""
    for text in overrides:
        name, sep, value_text = text.partition("=")
        section, dot, key = name.strip().partition(".")
        if not (sep and dot and section and key):
            raise UserError(f"{source}: --set {text!r}: expected SECTION.KEY=VALUE, e.g. training.epochs=1")
        try:
            value = json.loads(value_text)
        except json.JSONDecodeError:
            value = value_text
        if not isinstance(raw.setdefault(section, {}), dict):
            raise UserError(f"{source}: --set {text!r}: section {section!r} is not an object")
        raw[section][key] = value
    return raw


def load_config(path, overrides=()):
    """The validated config of `path`, with `--set` overrides applied before validation."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: config not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    source = f"{path} (with --set)" if overrides else str(path)
    if overrides and isinstance(raw, dict):  # anything else is rejected by validate
        raw = apply_overrides(raw, overrides, source)
    config = validate(raw, source)
    config["_source"] = str(path)
    return config


def arm_prompt(arm, prompt_cfg):
    """The prompt settings of an arm: the base prompt, with the character or retrieval switched on."""
    prompt = dict(prompt_cfg)
    if arm == "character":
        prompt["include_character"] = True
    if arm == "retrieval":
        prompt["retrieval"] = True
    return prompt
