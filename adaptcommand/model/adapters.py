"""LoRA adapter folders: their config, where each arm keeps them, saving, loading and merging.

Each training seed (config training.seeds) has its own folder under the arm's root:
`<root>/seed_<s>/` for the unified adapter, `<root>/seed_<s>/<persona_id>/` for per-user ones;
a per-user-on-unified adapter of seed s sits on the unified adapter of seed s.

An adapter is a standard PEFT folder (adapter_config.json, adapter_model.safetensors) plus the
train_log.json this project writes beside them; a folder is complete only with all three, which
is how a rerun knows what to skip. Adapters are written under a temporary name and renamed into
place (adaptcommand/data/data_io.atomic_path), so an interrupted run never leaves a complete-looking folder.
"""

import re
from dataclasses import dataclass
from pathlib import Path

from adaptcommand.data.data_io import UserError, atomic_path, write_json
from adaptcommand.model.arm_registry import ARMS, PREFIX
from adaptcommand.model.serving import merge_lora, read_adapter, weight_problem

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "train_log.json")


@dataclass
class AdapterJob:
    """One adapter to train: its name (a persona id, or 'all'), its data, its seed and its folder."""
    name: str
    train: list
    val: list
    seed: int
    folder: Path


def lora_config(cfg):
    """peft.LoraConfig from the config's `lora` section."""
    from peft import LoraConfig

    return LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")


def prefix_config(cfg):
    """peft.PrefixTuningConfig from the config's `prefix` section."""
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, prefix_projection=cfg.projection,
                              task_type="CAUSAL_LM")


def peft_config(cfg, arm):
    """The PEFT config an adapter arm trains: prefix tuning for the prefix arms, LoRA for the others."""
    return prefix_config(cfg.prefix) if ARMS[arm].kind == PREFIX else lora_config(cfg.lora)


def is_prefix_tuned(model):
    """Whether a PEFT model's active adapter is a prefix-tuning one (its prefix is a key/value cache the
    input continues, not weights in the modules)."""
    config = getattr(model, "active_peft_config", None)
    return config is not None and config.peft_type == "PREFIX_TUNING"


def prefix_inputs(model, attention):
    """(attention mask, extra decoder arguments) for a batch: for a prefix-tuning PEFT model its trained
    key/value prefix becomes the cache the dialogue continues and the mask gets the prefix in front (what
    PEFT's own forward does); for any other model the mask as it is and nothing more."""
    import torch

    if not is_prefix_tuned(model):
        return attention, {}
    config = model.active_peft_config
    batch = attention.shape[0]
    ones = torch.ones((batch, config.num_virtual_tokens), dtype=attention.dtype, device=attention.device)
    return torch.cat([ones, attention], dim=1), {"cache": model.get_prompt(batch)}


def is_complete(folder):
    return all((Path(folder) / name).is_file() for name in ADAPTER_FILES)


def arm_folder(adapters_cfg, arm, persona=None, seed=0):
    """Where an adapter arm keeps one seed's adapter: one folder for a unified arm, one per persona for the others."""
    root = Path(adapters_cfg.root(arm)) / f"seed_{seed}"
    return root if ARMS[arm].unified else root / persona


def seeds_found(root):
    """The training seeds that have a folder under an arm's root, in order."""
    root = Path(root)
    found = [int(m.group(1)) for p in root.glob("seed_*") if p.is_dir() and (m := re.fullmatch(r"seed_(\d+)", p.name))]
    return sorted(found)


def first_sessions(train, max_sessions=None):
    """A persona's train dialogues in recorded order (their order in the dialogue file), the first
    `max_sessions` of them if set: training.max_train_sessions, the learning curve's dial."""
    return sorted(train)[:max_sessions]


def jobs_for(scope_arm, splits, personas, root, seeds, max_sessions=None):
    """The AdapterJobs of a training scope, per seed: one unified job over all personas, or one per persona.

    max_sessions: each persona's first N train sessions only (every scope; the validation sets stay whole).
    """
    root = Path(root)
    jobs = []
    for seed in seeds:
        if ARMS[scope_arm].unified:
            jobs.append(AdapterJob("all", [i for p in personas for i in first_sessions(splits[p]["train"], max_sessions)],
                                   [i for p in personas for i in splits[p]["val"]], seed, root / f"seed_{seed}"))
        else:
            jobs += [AdapterJob(p, first_sessions(splits[p]["train"], max_sessions), splits[p]["val"], seed,
                                root / f"seed_{seed}" / p) for p in personas]
    return jobs


def folder_problem(folder):
    """Why an adapter folder that exists is not a complete adapter, or None."""
    missing = [name for name in ADAPTER_FILES if not (Path(folder) / name).is_file()]
    return f"missing {', '.join(missing)}" if missing else None


def adapter_problem(folder, model):
    """Why a complete adapter folder cannot be loaded onto `model` (a plain base model), or None.

    Checks what PEFT or the AdapterStore would otherwise fail on with a traceback, or load wrongly: the
    config is JSON, the weights file reads, every target module exists in the model and every LoRA matrix
    fits that module's shape.
    """
    try:
        config, weights = read_adapter(folder)
    except ValueError as err:
        return str(err)
    if config.get("peft_type") == "PREFIX_TUNING":
        return _prefix_problem(config, model)
    modules = dict(model.named_modules())
    names = {name.rsplit(".", 1)[-1] for name in modules}
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    absent = [t for t in targets if t not in names]
    if absent:
        return f"target modules {absent} are not in the model ({type(model).__name__})"
    return weight_problem(weights, modules, config)


TENSORBOARD_DIR = "tensorboard"  # each adapter's training curves: `tensorboard --logdir models/`


def write_training_curves(folder, log):
    """TensorBoard event files of one adapter's training, from its log: train loss and learning rate
    per optimizer step, validation loss and knowledge per epoch (at the step that ended the epoch)."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(folder))
    try:
        for step, (loss, lr) in enumerate(zip(log["step_train_loss"], log["step_learning_rate"]), start=1):
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/learning_rate", lr, step)
        for epoch in log["epochs"]:
            for key in ("val_loss", "val_knowledge"):
                if epoch.get(key) is not None:
                    writer.add_scalar(f"val/{key.removeprefix('val_')}", epoch[key], epoch["optimizer_steps"])
    finally:
        writer.close()


def _prefix_problem(config, model):
    """Why a prefix adapter's config does not fit the model (layers, key/value width), or None."""
    base = model.config
    layers = base.num_hidden_layers
    kv_width = getattr(base, "num_key_value_heads", None) or base.num_attention_heads
    kv_width *= getattr(base, "head_dim", None) or base.hidden_size // base.num_attention_heads
    if config.get("num_layers") != layers or config.get("token_dim") != kv_width:
        return (f"prefix for {config.get('num_layers')} layers of width {config.get('token_dim')}, the model has {layers} "
                f"of width {kv_width}: trained for another base model ({config.get('base_model_name_or_path')})")
    return None


def save_adapter(peft_model, adapter_name, folder, log):
    """Write one adapter of a PEFT model and its training log as a complete folder, atomically, with
    its training curves as TensorBoard event files in a subfolder when the log has them."""
    with atomic_path(folder) as tmp:
        peft_model.save_pretrained(tmp, selected_adapters=[adapter_name])
        nested = tmp / adapter_name  # PEFT saves a non-default adapter in a subfolder of its name
        if nested.is_dir():
            for item in nested.iterdir():
                item.rename(tmp / item.name)
            nested.rmdir()
        write_json(tmp / "train_log.json", log)
        if log.get("step_train_loss"):
            write_training_curves(tmp / TENSORBOARD_DIR, log)


def merge_unified(model, unified_dir):
    """The base model with the unified adapter merged in (per-user-on-unified adapters sit on top of it), in
    float32 and rounded once (serving.merge_lora): training and evaluation both merge it this way."""
    if not is_complete(unified_dir):
        raise UserError(f"{unified_dir}: no finished unified adapter; train it first with --scope all")
    try:
        return merge_lora(model, unified_dir)
    except ValueError as err:
        raise UserError(f"{unified_dir}: {err}") from None


def attach_adapters(model, adapters):
    """A PeftModel holding every adapter of {name: folder} (names: no dots), or `model` if there are none.
    Evaluation holds prefix adapters this way, a group of personas at a time (LoRA ones: serving.AdapterStore)."""
    from peft import PeftModel

    if not adapters:
        return model
    (first, folder), *rest = adapters.items()
    peft_model = PeftModel.from_pretrained(model, str(folder), adapter_name=first)
    for name, folder in rest:
        peft_model.load_adapter(str(folder), adapter_name=name)
    return peft_model.eval()
