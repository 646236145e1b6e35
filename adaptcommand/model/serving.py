"""Serving many LoRA adapters at a per-call cost that depends on the batch, not on how many exist.

PEFT keeps every loaded adapter as modules of its own: each `load_adapter` walks every module of the
model, the adapters already loaded included, and each forward with `adapter_names` loops over them, so
both grow with the adapters loaded (benchmarks/bench_serving.py; loading N adapters costs O(N^2)).
Here every target linear keeps one store of stacked weights, A (slots, r, in) and B (slots, out, r),
and a scaling per slot; each row of a batch names its slot and the projection applies it with one
gather and two batched matmuls (the idea of Punica's SGMV and S-LoRA, in plain torch). Slot 0 is no
adapter at all (PEFT's "__base__"), and adapters of a lower rank are zero-padded, which adds exact zeros.
Adapters are read from their PEFT folders with safetensors; no PEFT model is built. A store holds the
adapters of a group of personas at a time (`load` replaces them), so memory stays flat too.
tests/test_serving.py checks that replies and scores equal PEFT's.
"""

import json
import math
from pathlib import Path

import torch
from torch import nn

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch; slot 0 here


class ServedLoRALinear(nn.Module):
    """base(x) + scaling[s] * B[s] A[s] x, with s each row's slot (set by AdapterStore.route)."""

    def __init__(self, base, slots, rank):
        super().__init__()
        self.base = base
        device = base.weight.device
        # fp32, as PEFT keeps adapter weights and computes with them
        self.register_buffer("lora_A", torch.zeros(slots, rank, base.in_features, device=device), persistent=False)
        self.register_buffer("lora_B", torch.zeros(slots, base.out_features, rank, device=device), persistent=False)
        self.register_buffer("scaling", torch.zeros(slots, device=device), persistent=False)
        self.index, self.single = None, 0  # (batch,) slots of the rows; the one slot if all rows share it

    @property
    def in_features(self):
        return self.base.in_features

    @property
    def out_features(self):
        return self.base.out_features

    def forward(self, x):
        result = self.base(x)
        if self.single == 0:  # no adapter in the whole batch
            return result
        if self.single is not None:  # one adapter for every row: no gather
            delta = (x.to(self.lora_A.dtype) @ self.lora_A[self.single].T) @ self.lora_B[self.single].T
            return (result + delta * self.scaling[self.single]).to(result.dtype)
        a, b = self.lora_A[self.index], self.lora_B[self.index]  # (batch, r, in), (batch, out, r)
        delta = torch.bmm(torch.bmm(x.to(a.dtype), a.transpose(1, 2)), b.transpose(1, 2))
        return (result + delta * self.scaling[self.index][:, None, None]).to(result.dtype)


def replace_linears(model, targets, make):
    """Put make(linear) in place of every nn.Linear of `model` whose own name is in `targets`; returns
    {module name: the new layer}. The stacked trainer and the AdapterStore both wrap projections this way."""
    layers = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in targets:
                layer = make(child)
                setattr(module, child_name, layer)
                layers[f"{name}.{child_name}" if name else child_name] = layer
    return layers


def read_adapter(folder):
    """(adapter_config dict, {key: tensor}) of a PEFT adapter folder; ValueError saying what is wrong."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"adapter_config.json unreadable ({type(err).__name__}: {err})") from None
    try:
        weights = load_file(str(folder / "adapter_model.safetensors"))
    except (OSError, SafetensorError, ValueError, RuntimeError) as err:
        raise ValueError(f"adapter_model.safetensors corrupt or truncated ({str(err).splitlines()[0][:120]})") from None
    return config, weights


def lora_scaling(config):
    """PEFT's scaling of a LoRA adapter: alpha / r, or alpha / sqrt(r) with rsLoRA."""
    r, alpha = config["r"], config["lora_alpha"]
    return alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r


def unserved_feature(config):
    """What an adapter config uses that this store does not serve (DoRA, per-module ranks, ...), or None."""
    if config.get("peft_type", "LORA") != "LORA":
        return f"a {config.get('peft_type')} adapter, not LoRA"
    for key in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save"):
        if config.get(key):
            return f"{key}={json.dumps(config[key])} is not served (plain LoRA only)"
    if config.get("bias", "none") != "none":
        return f"bias={config['bias']!r} is not served (plain LoRA only)"
    return None


def module_of(key):
    """The base model's module name of a saved LoRA weight ("base_model.model.<module>.lora_A.weight")."""
    return key.removeprefix("base_model.model.").rsplit(".lora_", 1)[0]


def weight_problem(weights, modules, config):
    """Why an adapter's weights do not fit `modules` ({name: linear}), or None."""
    for key, tensor in weights.items():
        name = module_of(key)
        module = modules.get(name)
        if module is None:
            return f"weight {key} is for a module the model does not have: trained for another base model?"
        if ".lora_A." in key and tensor.shape[1] != module.in_features:
            return (f"{key} takes {tensor.shape[1]} inputs, {name} has {module.in_features}: "
                    f"trained for another base model ({config.get('base_model_name_or_path')})")
        if ".lora_B." in key and tensor.shape[0] != module.out_features:
            return (f"{key} gives {tensor.shape[0]} outputs, {name} has {module.out_features}: "
                    f"trained for another base model ({config.get('base_model_name_or_path')})")
    return None


def merge_lora(model, folder):
    """`model` with a LoRA adapter merged into its weights: W + scaling B A in float32, rounded to W's dtype
    once (PEFT's merge adds in the weights' dtype, so in bfloat16 a merged adapter would differ from the same
    adapter served unmerged by one more rounding). ValueError if it does not fit."""
    config, weights = read_adapter(folder)
    modules = dict(model.named_modules())
    problem = unserved_feature(config) or weight_problem(weights, modules, config)
    if problem:
        raise ValueError(problem)
    pairs = {}
    for key, tensor in weights.items():
        pairs.setdefault(module_of(key), {})["A" if ".lora_A." in key else "B"] = tensor
    with torch.no_grad():
        for name, pair in pairs.items():
            weight = modules[name].weight
            delta = pair["B"].float().to(weight.device) @ pair["A"].float().to(weight.device)
            weight.copy_((weight.float() + lora_scaling(config) * delta).to(weight.dtype))
    return model


class AdapterStore:
    """The LoRA adapters one model serves: a ServedLoRALinear in place of every target linear, and which
    adapter sits in which slot. `load` fills the slots, `route` names each row's adapter."""

    def __init__(self, model, targets, rank, slots=2):
        self.model, self.rank = model, rank
        self.layers = replace_linears(model, targets, lambda linear: ServedLoRALinear(linear, slots, rank))
        self.slot_of = {BASE: 0}
        model.adapter_store = self

    @classmethod
    def for_folders(cls, model, folders):
        """A store on `model` for LoRA adapters like those in `folders` (their targets and largest rank)."""
        targets, rank = set(), 1
        for folder in folders:
            try:
                config = json.loads((Path(folder) / "adapter_config.json").read_text(encoding="utf-8"))
                targets |= set([config["target_modules"]] if isinstance(config["target_modules"], str)
                               else config["target_modules"])
                rank = max(rank, int(config["r"]))
            except (OSError, ValueError, KeyError, TypeError):
                continue  # load() reports it
        return cls(model, targets, rank)

    @property
    def slots(self):
        return next(iter(self.layers.values())).lora_A.shape[0] if self.layers else 0

    def _resize(self, slots):
        for layer in self.layers.values():
            for name in ("lora_A", "lora_B"):
                old = getattr(layer, name)
                setattr(layer, name, old.new_zeros((slots, *old.shape[1:])))
            layer.scaling = layer.scaling.new_zeros(slots)

    def load(self, folders):
        """Hold exactly the adapters of {name: folder} (the ones held before are dropped); returns
        {name: why it could not be loaded} for the ones set aside."""
        if len(folders) + 1 > self.slots:
            self._resize(len(folders) + 1)
        with torch.no_grad():
            for layer in self.layers.values():
                layer.lora_A.zero_()
                layer.lora_B.zero_()
                layer.scaling.zero_()
        self.slot_of, problems = {BASE: 0}, {}
        for name, folder in folders.items():
            try:
                self._fill(len(self.slot_of), folder)
            except ValueError as err:
                problems[name] = str(err)
                continue
            self.slot_of[name] = len(self.slot_of)
        self.route([BASE])
        return problems

    def _fill(self, slot, folder):
        config, weights = read_adapter(folder)
        problem = unserved_feature(config) or weight_problem(weights, self.layers, config)
        if problem is None and config.get("r", 0) > self.rank:
            problem = f"rank {config['r']} above the store's {self.rank}"
        if problem:
            raise ValueError(problem)
        scaling = lora_scaling(config)
        with torch.no_grad():
            for key, tensor in weights.items():
                layer = self.layers[module_of(key)]
                if ".lora_A." in key:
                    layer.lora_A[slot, :tensor.shape[0]] = tensor
                else:
                    layer.lora_B[slot, :, :tensor.shape[1]] = tensor
                layer.scaling[slot] = scaling

    def route(self, names):
        """Set each row's adapter for the next forward passes (names: one per row; BASE for none)."""
        slots = [self.slot_of[name] for name in names]
        single = slots[0] if len(set(slots)) == 1 else None
        index = None if single is not None else torch.tensor(slots, device=self.model.device)
        for layer in self.layers.values():
            layer.index, layer.single = index, single


def store_of(model):
    """The AdapterStore serving `model`'s LoRA adapters, or None."""
    return getattr(model, "adapter_store", None)


def routes_adapters(model):
    """Whether rows of a batch can name adapters on `model` (a PEFT model or a store)."""
    return hasattr(model, "peft_config") or store_of(model) is not None
