"""JSON configs as typed sections: one frozen dataclass per section, each field's type, default and bounds
declared beside it, checked when a config is loaded.

An unknown key, a value of the wrong type, a choice that is not one of the allowed ones or a
number out of range is a UserError naming the file and the key, so a typo ("max_new_token",
"primary_metric": "parm_f1") never falls back silently to a default. Every script reads its
config through `load_config`; the sections a script does not use keep their defaults. Each value
has one key: adapter folders live in `adapters` (training writes there, evaluation reads there; one
key per adapter arm of the registry), the retrieval depth in `prompt.retrieved_history`.
"""

import copy
import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from adaptcommand.data.data_io import UserError
from adaptcommand.model.arm_registry import ARMS, REGISTRY, SCOPES

SYSTEM_TEMPLATE = (
    "You are a smart-home assistant. You control the TV (volume, brightness, input source), the AC "
    "(temperature 16-30, mode cool/heat/auto, fan speed 0-3), the lights (brightness, color warm/cool/neutral, "
    "mode static/dynamic), the speaker (volume, equalizer) and the security system (armed, alarm volume). "
    "Answer briefly and state the exact settings you apply."
)

# per-persona metrics the evaluation reports, any of which a config may name as arms.primary_metric
PERSONA_METRICS = ("routine_f1", "routine_recall", "routine_precision", "param_f1", "param_given_f1",
                   "param_private_f1", "param_precision", "param_recall", "device_f1", "device_precision",
                   "device_recall", "numerical_exact", "numerical_within1", "numerical_coverage",
                   "categorical_accuracy", "categorical_coverage", "embedding_similarity", "rouge1", "rouge2", "rougeL",
                   "cloze_top1")


def setting(default, low=None, high=None, above=None, choices=None, check=None):
    """A config field: its default and what a loaded value must satisfy: low <= value (or value > above),
    value <= high, value in choices, and check(value) None (else the problem)."""
    meta = {"low": low, "high": high, "above": above, "choices": choices, "check": check}
    if isinstance(default, list):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _repeat_problem(value):
    return f"repeats a name: {value}" if len(set(value)) != len(value) else None


def _names_problem(value):
    if not value or not all(isinstance(v, str) and v for v in value):
        return "must be a non-empty list of names"
    return _repeat_problem(value)


def _arms_problem(value):
    unknown = [v for v in value if v not in ARMS]
    return _names_problem(value) or (f"has unknown arm(s) {unknown}; known: {list(ARMS)}" if unknown else None)


def _seeds_problem(value):
    if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value):
        return f"must be a non-empty list of integers >= 0, got {json.dumps(value)}"
    return _repeat_problem(value)


def _metric_problem(name):
    return None if name in PERSONA_METRICS else f"is not a metric; known: {', '.join(PERSONA_METRICS)}"


@dataclass(frozen=True)
class ModelSection:
    name: str = "embedded:smollm2-135m-instruct"
    device: str = setting("auto", choices=("auto", "cpu", "cuda", "mps"))
    dtype: str = setting("auto", choices=("auto", "float32", "bfloat16", "float16"))


@dataclass(frozen=True)
class DataSection:
    dialogs: str = "data/cleaned/dialogs_clean.jsonl"
    splits: str = "data/splits/edgesplits.json"
    split: str = setting("test", choices=("train", "val", "test"))


@dataclass(frozen=True)
class PromptSection:
    system_template: str = SYSTEM_TEMPLATE
    max_context_messages: int = setting(10, low=0)
    include_character: bool = False
    retrieval: bool = False                          # retrieved past dialogues of the same user in the system prompt
    retrieved_history: int = setting(2, low=1)       # how many, when retrieval is on
    retrieved_max_messages: int = setting(6, low=1)


@dataclass(frozen=True)
class GenerationSection:
    max_new_tokens: int = setting(96, low=1)
    batch_size: int = setting(16, low=1)
    do_sample: bool = False
    temperature: float = setting(0.7, above=0)
    top_p: float = setting(0.9, above=0, high=1)
    seed: int = 0


@dataclass(frozen=True)
class EvaluationSection:
    embedding_model: str = "embedded:all-minilm-l6-v2"
    max_examples: int | None = setting(None, low=1)
    sample_outputs: int = setting(20, low=0)
    cloze: bool = True                               # the preference cloze (evaluation/cloze.py) for every model arm
    train_sessions: int = setting(0, low=0)          # memorisation check: baseline and adapter arms on each persona's last N routine-driven train sessions
    persona_group: int = setting(32, low=1)          # personas whose adapters are served at once (model/serving.py)


@dataclass(frozen=True)
class LoraSection:
    r: int = setting(8, low=1)
    alpha: int = setting(16, low=1)
    dropout: float = setting(0.05, low=0, high=0.99)
    target_modules: list[str] = setting(["q_proj", "v_proj"], check=_names_problem)


@dataclass(frozen=True)
class PrefixSection:                                  # prefix tuning (the prefix scopes): trained key/value vectors per layer
    num_virtual_tokens: int = setting(20, low=1)
    projection: bool = False                         # PEFT's prefix_projection: the prefix through a 2-layer MLP
    learning_rate: float | None = setting(None, above=0)  # the prefix scopes' own (null: training.learning_rate)


@dataclass(frozen=True)
class TrainingSection:
    scope: str = setting("per_user", choices=tuple(SCOPES))
    learning_rate: float = setting(5e-4, above=0)
    weight_decay: float = setting(0.01, low=0)
    warmup_ratio: float = setting(0.1, low=0, high=1)
    max_grad_norm: float = setting(1.0, above=0)
    epochs: int = setting(3, low=1)                  # the cap on epochs (select_by last: the epochs)
    unified_epochs: int | None = setting(None, low=1)  # the unified adapter's cap, if not `epochs` (it sees every persona's data)
    batch_size: int = setting(4, low=1)
    unified_batch_size: int | None = setting(None, low=1)  # the unified scopes' (all, all_on_all, prefix_all), if not `batch_size`
    max_seq_length: int = setting(1024, low=16)
    early_stopping_patience: int = setting(1, low=0)
    select_by: str = setting("val_loss", choices=("val_loss", "val_knowledge", "last"))  # the epoch kept (training.py)
    seeds: list[int] = setting([0], check=_seeds_problem)  # one adapter per seed, each in <arm root>/seed_<s>/
    loss_on: str = setting("assistant", choices=("assistant", "all"))  # "all": user turns supervised too
    max_train_sessions: int | None = setting(None, low=1)  # each persona's first N train sessions only (learning curve)
    parallel_personas: int = setting(1, low=1)      # K > 1: train K personas' adapters in one batched pass
    micro_batch_size: int = setting(0, low=0)       # with K > 1: sequences per forward pass (0: the whole step)


def _adapter_root(self, arm):
    """The root folder of an adapter arm's adapters."""
    return getattr(self, arm)


# where each adapter arm of the registry lives: training writes, evaluation reads
AdaptersSection = dataclasses.make_dataclass(
    "AdaptersSection", [(arm.name, str, field(default=f"models/{arm.name}")) for arm in REGISTRY if arm.has_adapters],
    frozen=True, namespace={"root": _adapter_root})


@dataclass(frozen=True)
class ArmsSection:
    names: list[str] = setting(["echo", "oracle", "baseline", "character", "retrieval", "lora_all", "lora_per_user",
                                "lora_per_user_on_all"], check=_arms_problem)
    best_on_val: bool = True
    primary_metric: str = setting("routine_f1", check=_metric_problem)
    n_bootstrap: int = setting(2000, low=100)
    min_personas: int = setting(10, low=1)           # fewer personas than this: the verdict is "too few personas"


@dataclass(frozen=True)
class Config:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    prompt: PromptSection = field(default_factory=PromptSection)
    generation: GenerationSection = field(default_factory=GenerationSection)
    evaluation: EvaluationSection = field(default_factory=EvaluationSection)
    lora: LoraSection = field(default_factory=LoraSection)
    prefix: PrefixSection = field(default_factory=PrefixSection)
    training: TrainingSection = field(default_factory=TrainingSection)
    adapters: AdaptersSection = field(default_factory=AdaptersSection)
    arms: ArmsSection = field(default_factory=ArmsSection)
    source: str = field(default="", metadata={"not_a_section": True})  # the file it was read from


SECTIONS = {f.name: f.default_factory for f in fields(Config) if not f.metadata.get("not_a_section")}


def defaults():
    return Config()


def _allowed_types(hint):
    """The Python types a JSON value of a field annotated `hint` may have (a float field takes integers too)."""
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    allowed = []
    for arg in typing.get_args(hint) if union else (hint,):
        arg = typing.get_origin(arg) or arg  # list[str] -> list
        allowed += [int, float] if arg is float else [arg]
    return tuple(allowed)


def _type_ok(value, allowed):
    if isinstance(value, bool) and bool not in allowed:
        return False  # JSON true is not a number
    return isinstance(value, allowed)


def _type_name(allowed):
    names = {int: "integer", float: "number", str: "string", bool: "true/false", list: "list", type(None): "null"}
    return " or ".join(names[t] for t in allowed)


def _value_problem(value, allowed, meta):
    """Why `value` does not fit a field of these types and bounds, or None."""
    if not _type_ok(value, allowed):
        return f"must be {_type_name(allowed)}, got {json.dumps(value)}"
    if meta.get("choices") and value not in meta["choices"]:
        return f"must be one of {list(meta['choices'])}, got {value!r}"
    low, above, high = meta.get("low"), meta.get("above"), meta.get("high")
    if value is not None and not isinstance(value, (list, str, bool)) and (
            (low is not None and value < low) or (above is not None and value <= above)
            or (high is not None and value > high)):
        lower = f">= {low}" if low is not None else f"> {above}"
        return f"must be {lower}" + (f" and <= {high}" if high is not None else "") + f", got {value}"
    return meta["check"](value) if meta.get("check") else None


def _section(name, values, source):
    """One section's dataclass from its JSON object; UserError naming the first bad key."""
    make = SECTIONS[name]
    if not isinstance(values, dict):
        raise UserError(f"{source}: section {name!r} must be an object")
    known = {f.name: f for f in fields(make)}
    hints = typing.get_type_hints(make)
    for key, value in values.items():
        if key not in known:
            raise UserError(f"{source}: unknown key {name}.{key} (known: {', '.join(known)})")
        problem = _value_problem(value, _allowed_types(hints[key]), known[key].metadata)
        if problem:
            raise UserError(f"{source}: {name}.{key} {problem}")
    return make(**values)


def validate(raw, source):
    """The Config of `raw` (defaults where it is silent); UserError for any unknown, mistyped, unknown-choice or
    out-of-range value."""
    if not isinstance(raw, dict):
        raise UserError(f"{source}: a config must be a JSON object of sections")
    unknown = [name for name in raw if name not in SECTIONS and name != "description"]
    if unknown:
        raise UserError(f"{source}: unknown section {unknown[0]!r} (known: {', '.join(SECTIONS)})")
    return Config(**{name: _section(name, values, source) for name, values in raw.items() if name in SECTIONS},
                  source=source)


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
    return dataclasses.replace(validate(raw, source), source=str(path))


def as_dict(config):
    """A config (or one section) as plain JSON-ready dicts: what logs and summaries record."""
    return dataclasses.asdict(config)



def with_values(config, section, **values):
    """The config with some values of one section replaced (frozen sections are changed by copy, not in place)."""
    return dataclasses.replace(config, **{section: dataclasses.replace(getattr(config, section), **values)})
