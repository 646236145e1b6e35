"""Train K personas' LoRA adapters in one batched pass over the frozen base model.

Each target linear layer gets stacked adapter weights A (K, r, in) and B (K, out, r); a batch mixes
examples of several personas and every example goes through its own persona's slice (as in
mLoRA/ASPEN), while the frozen base layers run once for the whole batch. Each persona's loss is
the mean over its own supervised tokens, its gradient clipping, learning-rate schedule, AdamW
state and early stopping are its own, so every persona gets the updates it would get trained
alone (`train_adapter`), up to float rounding. `micro_batch_size` splits a step's mixed batch into
forward passes of similar-length sequences whose gradients accumulate (1 on a CPU, where one
sequence already saturates the cores; 0 = the whole step at once on a GPU). PEFT cannot train
mixed adapters (`adapter_names` is inference-only), hence this small module. Adapters are initialised and exported through PEFT,
so their start and their folders are exactly those of the one-by-one trainer.
"""

import math
import random

import torch
from torch import nn
from tqdm.auto import tqdm

from adaptcommand.model.adapters import lora_config, save_adapter
from adaptcommand.model.serving import replace_linears
from adaptcommand.model.training import (
    IGNORE,
    BestEpoch,
    TrainingDiverged,
    collate,
    epoch_batches,
    lr_factor,
    select_examples,
    supervised_losses,
    truncated_count,
    val_scores,
)


class StackedLoRALinear(nn.Module):
    """base(x) + scaling * B[i] A[i] dropout(x) for each example i's persona.

    Each persona's A and B are parameters of their own, so that torch's AdamW keeps a param group per
    persona (its own learning rate, step count and moments); a forward stacks them, one copy of K small
    matrices."""

    def __init__(self, base, k, r, scaling, dropout):
        super().__init__()
        self.base, self.scaling = base, scaling
        device = base.weight.device
        self.lora_A = nn.ParameterList([torch.zeros(r, base.in_features, device=device) for _ in range(k)])
        self.lora_B = nn.ParameterList([torch.zeros(base.out_features, r, device=device) for _ in range(k)])
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.index = None  # (batch,) persona slot of each example, set before each forward

    def forward(self, x):
        """As PEFT's LoRA layer computes it: the adapter in its own dtype (float32), added to the base output
        before one cast back to the base's dtype."""
        result = self.base(x)
        a, b = torch.stack(list(self.lora_A))[self.index], torch.stack(list(self.lora_B))[self.index]
        h = torch.einsum("bsi,bri->bsr", self.dropout(x).to(a.dtype), a)
        return (result + torch.einsum("bsr,bor->bso", h, b) * self.scaling).to(result.dtype)


def inject(model, lora_cfg, k):
    """Replace each target linear with a stacked K-adapter layer; returns {module name: layer}."""
    scaling = lora_cfg.alpha / lora_cfg.r
    layers = replace_linears(model, lora_cfg.target_modules,
                             lambda linear: StackedLoRALinear(linear, k, lora_cfg.r, scaling, lora_cfg.dropout))
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers.values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    return layers


def persona_params(layers, slot):
    """One persona's adapter parameters, every layer's A and B."""
    return [p for layer in layers.values() for p in (layer.lora_A[slot], layer.lora_B[slot])]


def remove(model, layers):
    """Put the original linear layers back."""
    for name, layer in layers.items():
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, layer.base)


def peft_lora_weights(peft_model, adapter):
    """{module name: (A, B)} of one PEFT adapter, module names as in the plain base model."""
    out = {}
    for name, module in peft_model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and adapter in getattr(module, "lora_A", {}):
            out[name] = (module.lora_A[adapter].weight, module.lora_B[adapter].weight)
    return out


def set_index(layers, index):
    for layer in layers.values():
        layer.index = index


def train_stacked(model, layers, train_sets, val_sets, cfg, pad_id, seed, progress=True):
    """Train every slot's adapter together; each slot ends at its own best epoch. Returns a log per slot."""
    k = len(train_sets)
    device = next(model.parameters()).device
    groups = [{"params": persona_params(layers, slot)} for slot in range(k)]  # one per persona
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = [math.ceil(len(t) / cfg.batch_size) for t in train_sets]
    schedules = [lr_factor(cfg, s) for s in steps_per_epoch]  # each persona's, as trained alone
    rngs = [random.Random(seed) for _ in range(k)]
    trackers = [BestEpoch(cfg.early_stopping_patience, len(t), len(v), cfg.select_by) for t, v in zip(train_sets, val_sets)]
    done, step_of = [False] * k, [0] * k
    route = lambda slots: set_index(layers, slots)  # noqa: E731
    bar = tqdm(total=max(steps_per_epoch) * cfg.epochs, desc=f"{k} adapters", unit="step", leave=False,
               disable=not progress)
    model.train()
    for _ in range(cfg.epochs):
        live = [slot for slot in range(k) if not done[slot]]
        if not live:
            break
        plans = {slot: epoch_batches(len(train_sets[slot]), cfg.batch_size, rngs[slot]) for slot in live}
        epoch_loss, epoch_tokens = [0.0] * k, [0] * k
        for t in range(max(len(p) for p in plans.values())):
            chunk = [(slot, train_sets[slot][i]) for slot in live if t < len(plans[slot]) for i in plans[slot][t]]
            tokens = torch.zeros(k)  # each persona's supervised tokens this step: its loss is their mean
            for slot, e in chunk:
                tokens[slot] += sum(label != IGNORE for label in e["labels"][1:])
            chunk.sort(key=lambda item: len(item[1]["input_ids"]))  # similar lengths share a forward pass
            per_slot = torch.zeros(k)
            width = cfg.micro_batch_size or len(chunk)
            for m in range(0, len(chunk), width):
                micro = chunk[m:m + width]
                input_ids, attention, labels = (x.to(device) for x in collate([e for _, e in micro], pad_id))
                slots = torch.tensor([slot for slot, _ in micro], device=device)
                route(slots)
                sums, _ = supervised_losses(model, input_ids, attention, labels)
                (sums / tokens.to(device)[slots].clamp(min=1)).sum().backward()  # gradients accumulate
                per_slot.index_add_(0, slots.cpu(), sums.detach().cpu())
                for slot in slots.unique().tolist():
                    trackers[slot].log["train_tokens"] += int(attention[slots == slot].sum())
            active = sorted({slot for slot, _ in chunk})
            for slot, group in enumerate(optimizer.param_groups):
                if slot in active:  # as one persona's step alone: its clipping, its learning rate
                    torch.nn.utils.clip_grad_norm_(group["params"], cfg.max_grad_norm)
                    group["lr"] = cfg.learning_rate * schedules[slot](step_of[slot])
                else:  # no batch this step: no update, no decay, no step counted
                    for param in group["params"]:
                        param.grad = None
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            for slot in active:
                trackers[slot].end_step(float(per_slot[slot]) / max(int(tokens[slot]), 1),
                                        optimizer.param_groups[slot]["lr"])
                step_of[slot] += 1
                epoch_loss[slot] += float(per_slot[slot])
                epoch_tokens[slot] += int(tokens[slot])
            bar.update(1)
        scores = val_scores(model, val_sets, pad_id, route)
        for slot in live:
            snapshot = lambda: [(layer.lora_A[slot].detach().clone(), layer.lora_B[slot].detach().clone())  # noqa: E731
                                for layer in layers.values()]
            done[slot] = trackers[slot].end_epoch(epoch_loss[slot], epoch_tokens[slot], scores[slot], snapshot)
    bar.close()
    model.eval()
    return [kept_epoch(layers, slot, tracker, k) for slot, tracker in enumerate(trackers)]


def kept_epoch(layers, slot, tracker, k):
    """Put a slot's kept epoch back into its weights; its training log, or the TrainingDiverged error of a
    slot that has no epoch to keep (the other slots are not affected)."""
    try:
        log = tracker.finish()
    except TrainingDiverged as err:
        return err
    # each slot's share of the group's time: the K slots trained in the same seconds
    log.update(seconds=log["seconds"] / k, group_seconds=log["seconds"], parallel_personas=k)
    with torch.no_grad():
        for layer, (a, b) in zip(layers.values(), tracker.state):
            layer.lora_A[slot].copy_(a)
            layer.lora_B[slot].copy_(b)
    return log


def peft_init(model, lora, seed):
    """The LoRA weights PEFT initialises for an adapter with this seed, as the one-by-one trainer does."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, lora, adapter_name="init")
    weights = {name: (a.detach().clone(), b.detach().clone()) for name, (a, b) in peft_lora_weights(peft_model, "init").items()}
    return peft_model.unload(), weights


def train_group(model, cfg, train_sets, val_sets, pad_id, seed, progress=True):
    """Train len(train_sets) adapters of one seed together on `model` (a plain base model, left as it was).

    Returns (model, [per-slot {module name: (A, B)}], [per-slot training log, or TrainingDiverged]).
    """
    model, init = peft_init(model, lora_config(cfg.lora), seed)  # every slot starts alike
    layers = inject(model, cfg.lora, len(train_sets))
    with torch.no_grad():
        for name, layer in layers.items():
            for a, b in zip(layer.lora_A, layer.lora_B):
                a.copy_(init[name][0])
                b.copy_(init[name][1])
    try:
        logs = train_stacked(model, layers, train_sets, val_sets, cfg.training, pad_id, seed, progress)
        states = [{name: (layer.lora_A[slot].detach().clone(), layer.lora_B[slot].detach().clone())
                   for name, layer in layers.items()} for slot in range(len(train_sets))]
    finally:
        remove(model, layers)
    return model, states, logs


def export_adapters(model, lora, states, folders, logs):
    """Write each slot as a standard PEFT adapter folder (adapters.save_adapter). The PEFT wrapper
    is taken off again even when a write fails, so later groups train on the plain base model."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora, adapter_name="export")
    try:
        targets = peft_lora_weights(peft_model, "export")
        for state, folder, log in zip(states, folders, logs):
            with torch.no_grad():
                for name, (a, b) in state.items():
                    targets[name][0].copy_(a)
                    targets[name][1].copy_(b)
            save_adapter(peft_model, "export", folder, log)
    finally:
        model = peft_model.unload()
    return model


def train_in_groups(model, tokenizer, cfg, jobs, examples, extra_log, report):
    """Train AdapterJobs of one seed K = training.parallel_personas at a time; `report(job, log, error)` after each.

    Returns the base model (the stacked layers are removed again after every group). A slot whose
    training diverged, or a group that fails, is reported failed and the others go on.
    """
    k = cfg.training.parallel_personas
    ready = []
    for job in jobs:
        if job.train:
            ready.append(job)
        else:
            report(job, None, "no train dialogues")
    for start in tqdm(range(0, len(ready), k), desc=f"groups of {k}", unit="group", disable=not ready):
        group = ready[start:start + k]
        try:
            train_sets = [select_examples(examples, job.train) for job in group]
            val_sets = [select_examples(examples, job.val) for job in group]
            model, states, logs = train_group(model, cfg, train_sets, val_sets, tokenizer.pad_token_id, group[0].seed)
            kept = [slot for slot, log in enumerate(logs) if not isinstance(log, Exception)]
            for slot in kept:
                logs[slot].update(extra_log, persona_id=group[slot].name,
                                  truncated_examples=truncated_count(train_sets[slot]))
            model = export_adapters(model, lora_config(cfg.lora), [states[s] for s in kept],
                                    [group[s].folder for s in kept], [logs[s] for s in kept])
        except (OSError, ValueError, RuntimeError) as err:
            for job in group:
                report(job, None, str(err))
            continue
        for job, log in zip(group, logs):
            report(job, None if isinstance(log, Exception) else log, str(log) if isinstance(log, Exception) else "")
    return model
