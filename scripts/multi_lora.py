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
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from scripts.training import IGNORE, collate, lr_lambda


class StackedLoRALinear(nn.Module):
    """base(x) + scaling * B[i] A[i] dropout(x) for each example i's persona."""

    def __init__(self, base, k, r, scaling, dropout):
        super().__init__()
        self.base, self.scaling = base, scaling
        self.lora_A = nn.Parameter(torch.zeros(k, r, base.in_features, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(k, base.out_features, r, device=base.weight.device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.index = None  # (batch,) persona slot of each example, set before each forward

    def forward(self, x):
        a, b = self.lora_A[self.index], self.lora_B[self.index]
        h = torch.einsum("bsi,bri->bsr", self.dropout(x).to(a.dtype), a)
        return self.base(x) + torch.einsum("bsr,bor->bso", h, b).to(x.dtype) * self.scaling


def inject(model, lora_cfg, k):
    """Replace each target linear with a stacked K-adapter layer; returns {module name: layer}."""
    layers = {}
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child_name in lora_cfg["target_modules"]:
                layer = StackedLoRALinear(child, k, lora_cfg["r"], lora_cfg["alpha"] / lora_cfg["r"], lora_cfg["dropout"])
                setattr(module, child_name, layer)
                layers[f"{name}.{child_name}" if name else child_name] = layer
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in layers.values():
        layer.lora_A.requires_grad_(True)
        layer.lora_B.requires_grad_(True)
    return layers


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


def per_example_losses(model, input_ids, attention, labels):
    """(loss sum, supervised tokens) per example; the vocabulary projection only where supervised."""
    hidden = model.get_decoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    token_loss = nn.functional.cross_entropy(logits, targets[keep], reduction="none")
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets)[keep]
    sums = torch.zeros(input_ids.shape[0], device=input_ids.device).index_add(0, rows, token_loss)
    return sums, keep.sum(dim=1)


class StackedAdamW:
    """torch.optim.AdamW's update (foreach form) with a learning rate and step count per persona."""

    def __init__(self, params, k, weight_decay, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.wd, self.betas, self.eps = params, weight_decay, betas, eps
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.steps = torch.zeros(k, dtype=torch.float64)

    @torch.no_grad()
    def step(self, lrs, active):
        """lrs: (K,) learning rates; active: (K,) bool, the personas that had a batch this step."""
        b1, b2 = self.betas
        self.steps += active.double()
        bc1 = 1 - b1 ** self.steps
        bc2_sqrt = (1 - b2 ** self.steps).sqrt()
        lr = torch.where(active, lrs.double(), torch.zeros_like(lrs.double()))  # 0: an idle persona stays put
        decay, step_size = 1 - lr * self.wd, lr / bc1.clamp(min=1e-12)
        for p, m, v in zip(self.params, self.m, self.v):
            shape = (-1,) + (1,) * (p.dim() - 1)
            per_slot = lambda x: x.to(dtype=p.dtype, device=p.device).view(shape)  # noqa: E731
            act, g = active.to(p.device).view(shape), p.grad
            p.mul_(per_slot(decay))
            m.copy_(torch.where(act, m.lerp(g, 1 - b1), m))  # the moments of an idle persona must not decay
            v.copy_(torch.where(act, v * b2 + (1 - b2) * g * g, v))
            p.sub_(per_slot(step_size) * m / (v.sqrt() / per_slot(bc2_sqrt.clamp(min=1e-12)) + self.eps))
            p.grad = None


def clip_per_persona(params, max_norm):
    """clip_grad_norm_ applied to each persona's slice of the stacked gradients separately."""
    norms = torch.sqrt(sum((p.grad.float() ** 2).flatten(1).sum(dim=1) for p in params))
    coef = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for p in params:
        p.grad.mul_(coef.view((-1,) + (1,) * (p.dim() - 1)).to(p.grad.dtype))


def _batches(n_examples, batch_size, rng):
    order = list(range(n_examples))
    rng.shuffle(order)
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


@torch.no_grad()
def val_losses(model, layers, val_sets, pad_id, batch_size=8):
    """Mean assistant-token loss per persona slot (None where it has no val examples)."""
    model.eval()
    items = [(slot, e) for slot, examples in enumerate(val_sets) for e in examples]
    totals = torch.zeros(len(val_sets), dtype=torch.float64)
    counts = torch.zeros(len(val_sets), dtype=torch.float64)
    device = next(model.parameters()).device
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        batch = [t.to(device) for t in collate([e for _, e in chunk], pad_id)]
        slots = torch.tensor([slot for slot, _ in chunk], device=device)
        set_index(layers, slots)
        sums, n = per_example_losses(model, *batch)
        totals.index_add_(0, slots.cpu(), sums.double().cpu())
        counts.index_add_(0, slots.cpu(), n.double().cpu())
    model.train()
    return [float(t / c) if c else None for t, c in zip(totals, counts)]


def train_stacked(model, layers, train_sets, val_sets, cfg, pad_id, progress=True):
    """Train every slot's adapter together; each slot ends at its own best epoch. Returns a log per slot."""
    k, start = len(train_sets), time.perf_counter()
    device = next(model.parameters()).device
    params = [p for layer in layers.values() for p in (layer.lora_A, layer.lora_B)]
    optimizer = StackedAdamW(params, k, cfg["weight_decay"])
    steps_per_epoch = [math.ceil(len(t) / cfg["batch_size"]) for t in train_sets]
    schedules = [lr_lambda(max(1, int(cfg["warmup_ratio"] * s * cfg["epochs"])), s * cfg["epochs"]) for s in steps_per_epoch]
    rngs = [random.Random(cfg["seed"]) for _ in range(k)]
    logs = [{"epochs": [], "train_examples": len(t), "val_examples": len(v), "train_tokens": 0, "supervised_tokens": 0}
            for t, v in zip(train_sets, val_sets)]
    best = [{"score": math.inf, "epoch": None, "state": None} for _ in range(k)]
    bad, done, step_of = [0] * k, [False] * k, [0] * k
    bar = tqdm(total=max(steps_per_epoch) * cfg["epochs"], desc=f"{k} adapters", unit="step", leave=False,
               disable=not progress)
    model.train()
    for epoch in range(1, cfg["epochs"] + 1):
        live = [slot for slot in range(k) if not done[slot]]
        if not live:
            break
        plans = {slot: _batches(len(train_sets[slot]), cfg["batch_size"], rngs[slot]) for slot in live}
        epoch_loss, epoch_tokens = [0.0] * k, [0] * k
        for t in range(max(len(p) for p in plans.values())):
            chunk = [(slot, train_sets[slot][i]) for slot in live if t < len(plans[slot]) for i in plans[slot][t]]
            tokens = torch.zeros(k)  # each persona's supervised tokens this step: its loss is their mean
            for slot, e in chunk:
                tokens[slot] += sum(label != IGNORE for label in e["labels"][1:])
            chunk.sort(key=lambda item: len(item[1]["input_ids"]))  # similar lengths share a forward pass
            per_slot = torch.zeros(k)
            width = cfg["micro_batch_size"] or len(chunk)
            for m in range(0, len(chunk), width):
                micro = chunk[m:m + width]
                input_ids, attention, labels = (x.to(device) for x in collate([e for _, e in micro], pad_id))
                slots = torch.tensor([slot for slot, _ in micro], device=device)
                set_index(layers, slots)
                sums, _ = per_example_losses(model, input_ids, attention, labels)
                (sums / tokens.to(device)[slots].clamp(min=1)).sum().backward()  # gradients accumulate
                per_slot.index_add_(0, slots.cpu(), sums.detach().cpu())
                for slot in slots.unique().tolist():
                    logs[slot]["train_tokens"] += int(attention[slots == slot].sum())
            active = torch.zeros(k, dtype=torch.bool)
            active[[slot for slot, _ in chunk]] = True
            clip_per_persona(params, cfg["max_grad_norm"])
            lrs = torch.tensor([cfg["learning_rate"] * schedules[s](step_of[s]) for s in range(k)])
            optimizer.step(lrs, active)
            for slot in active.nonzero().flatten().tolist():
                step_of[slot] += 1
                epoch_loss[slot] += float(per_slot[slot])
                epoch_tokens[slot] += int(tokens[slot])
            bar.update(1)
        losses = val_losses(model, layers, val_sets, pad_id)
        for slot in live:
            logs[slot]["supervised_tokens"] += epoch_tokens[slot]
            logs[slot]["epochs"].append({"epoch": epoch, "train_loss": epoch_loss[slot] / max(epoch_tokens[slot], 1),
                                         "val_loss": losses[slot], "seconds": time.perf_counter() - start})
            score = losses[slot] if losses[slot] is not None else -epoch
            if score < best[slot]["score"]:
                best[slot] = {"score": score, "epoch": epoch,
                              "state": [(layer.lora_A[slot].detach().clone(), layer.lora_B[slot].detach().clone())
                                        for layer in layers.values()]}
                bad[slot] = 0
            else:
                bad[slot] += 1
                done[slot] = bad[slot] > cfg["early_stopping_patience"]
    bar.close()
    model.eval()
    for slot in range(k):
        with torch.no_grad():
            for layer, (a, b) in zip(layers.values(), best[slot]["state"]):
                layer.lora_A[slot].copy_(a)
                layer.lora_B[slot].copy_(b)
        log = logs[slot]
        log.update(best_epoch=best[slot]["epoch"], best_val_loss=log["epochs"][best[slot]["epoch"] - 1]["val_loss"],
                   final_train_loss=log["epochs"][best[slot]["epoch"] - 1]["train_loss"],
                   seconds=time.perf_counter() - start, parallel_personas=k)
    return logs


def peft_init(model, lora, seed):
    """The LoRA weights PEFT initialises for one adapter with this seed, as the one-by-one trainer does."""
    from peft import get_peft_model

    torch.manual_seed(seed)
    peft_model = get_peft_model(model, lora, adapter_name="init")
    weights = {name: (a.detach().clone(), b.detach().clone()) for name, (a, b) in peft_lora_weights(peft_model, "init").items()}
    return peft_model.unload(), weights


def train_group(model, lora, cfg, train_sets, val_sets, pad_id, progress=True):
    """Train len(train_sets) adapters together on `model` (a plain base model, left as it was).

    Returns (model, [per-slot {module name: (A, B)}], [per-slot training log]).
    """
    inits = []
    for _ in train_sets:
        model, weights = peft_init(model, lora, cfg["training"]["seed"])
        inits.append(weights)
    layers = inject(model, cfg["lora"], len(train_sets))
    with torch.no_grad():
        for slot, weights in enumerate(inits):
            for name, layer in layers.items():
                layer.lora_A[slot].copy_(weights[name][0])
                layer.lora_B[slot].copy_(weights[name][1])
    try:
        logs = train_stacked(model, layers, train_sets, val_sets, cfg["training"], pad_id, progress)
        states = [{name: (layer.lora_A[slot].detach().clone(), layer.lora_B[slot].detach().clone())
                   for name, layer in layers.items()} for slot in range(len(train_sets))]
    finally:
        remove(model, layers)
    return model, states, logs


def export_adapters(model, lora, states, folders, logs, save):
    """Write each slot as a standard PEFT adapter folder via `save(peft_model, adapter, folder, log)`."""
    from peft import get_peft_model

    peft_model = get_peft_model(model, lora, adapter_name="export")
    targets = peft_lora_weights(peft_model, "export")
    for state, folder, log in zip(states, folders, logs):
        with torch.no_grad():
            for name, (a, b) in state.items():
                targets[name][0].copy_(a)
                targets[name][1].copy_(b)
        save(peft_model, "export", folder, log)
    return peft_model.unload()
