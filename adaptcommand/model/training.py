"""LoRA training on whole dialogues with the loss on assistant tokens only: the one training core.

One sequence per dialogue: the prompt builder's system message, then the dialogue, rendered with
the model's chat template. Labels are -100 everywhere except each assistant message's content and
its end-of-turn token, so every assistant turn is supervised while each dialogue is read once per
epoch (the per-turn recipe re-reads the growing history once per assistant turn).

Examples are built for every dialogue of the cleaned file at once with `datasets` (`load_dataset`
+ `map`), which caches them on disk keyed by the file, the tokenizer, the prompt settings and this
code: the three training scopes and every rerun share one tokenization.

The one-by-one trainer here (`AdapterTrainer`, PEFT) and the stacked K-persona trainer in
adaptcommand/model/multi_lora.py share the loss (`supervised_losses`), the validation scores
(`val_scores`), the batch plan (`epoch_batches`), the learning-rate schedule (`lr_factor`) and the
epoch selection with the kept epoch's weights (`BestEpoch`).

Epoch selection (`training.select_by`):
- `val_loss`: the epoch of lowest validation loss on the supervised tokens. It is dominated by the
  reference's phrasing, and on the positive control it kept 15 steps and hid the planted effect.
- `val_knowledge`: the epoch of highest mean log-probability of the *value tokens* of the user's
  routine settings on the validation dialogues, teacher-forced: wherever a message (user or
  assistant) first states a value of the session's applied routine, the tokens of that value
  ("22", "warm"). It is what the study measures (routine F1, cloze) in its smoothest form: a mean
  over every value token rather than a top-1 over ~20 items, and it comes from the same forward
  pass as the validation loss. The spans are found by the evaluation layer
  (cloze.first_value_spans) and handed to `tokenized_dialogs`.
- `last`: the last epoch; the configured epoch count is the recipe.

The schedule is that of the epochs actually trained. With `last`, one linear warmup/decay spans all
epochs. With `val_loss` or `val_knowledge` the kept epoch may be any, so every epoch is its own
warmup/decay cycle (warm restarts): whichever epoch is kept, its weights come from a learning rate
that had decayed to 0, never from the middle of a longer schedule.
"""

import dataclasses
import math
import random
import time
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from adaptcommand.data.data_io import UserError
from adaptcommand.model.adapters import peft_config, prefix_inputs, save_adapter
from adaptcommand.model.arm_registry import ARMS, PREFIX
from adaptcommand.model.prompting import chat_messages, system_prompt

IGNORE = -100


def _ids(tokenizer, messages, add_generation_prompt=False):
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def end_of_turn_ids(tokenizer):
    """Token ids the template puts after an assistant message before the next message starts."""
    probe = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    full = _ids(tokenizer, probe)
    prefix = _ids(tokenizer, probe[:1], add_generation_prompt=True) + tokenizer("b", add_special_tokens=False)["input_ids"]
    return full[len(prefix):]


def supervised_sequence(tokenizer, messages, roles=("assistant",)):
    """(input_ids, labels) for chat messages; labels keep the content of `roles`' messages + their end-of-turn token.

    roles ("assistant",) is the guide's recipe; ("user", "assistant") also supervises what the user
    says, the only place the real data states most preferences (config training.loss_on "all").
    """
    input_ids = _ids(tokenizer, messages)
    labels = [IGNORE] * len(input_ids)
    eot = end_of_turn_ids(tokenizer)
    keep_eot = eot[:1]  # <|im_end|>: the model must learn to stop; the newline after it is template glue
    for k, message in enumerate(messages):
        if message["role"] not in roles:
            continue
        header = _message_header(tokenizer, messages, k)
        start = len(header)
        end = len(_ids(tokenizer, messages[: k + 1])) - len(eot) + len(keep_eot)
        if input_ids[:start] != header:
            raise ValueError("chat template does not render prefixes as token prefixes; cannot mask by position")
        labels[start:end] = input_ids[start:end]
    return input_ids, labels


def _message_header(tokenizer, messages, k):
    """Token ids of messages[:k] plus the template's opening of message k (its role header)."""
    if messages[k]["role"] == "assistant":
        return _ids(tokenizer, messages[:k], add_generation_prompt=True)
    empty = _ids(tokenizer, messages[:k] + [{**messages[k], "content": ""}])
    return empty[: len(empty) - len(end_of_turn_ids(tokenizer))]


LOSS_ROLES = {"assistant": ("assistant",), "all": ("user", "assistant")}


def value_positions(tokenizer, chat, spans):
    """Token indices of the character spans [(chat message index, start, end)] of the chat messages'
    contents in their rendering (`_ids`): the tokens that overlap each span."""
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    starts, cursor = [], 0
    for message in chat:  # each content appears verbatim, in order
        at = text.find(message["content"], cursor)
        starts.append(at)
        cursor = at + len(message["content"]) if at >= 0 else cursor
    positions = set()
    for k, start, end in spans:
        if starts[k] < 0:
            continue
        a, b = starts[k] + start, starts[k] + end
        positions.update(i for i, (s, e) in enumerate(offsets) if s < b and e > a and e > s)
    return sorted(positions)


def dialog_example(tokenizer, dialog, prompt_cfg, max_seq_length, loss_on="assistant", spans=()):
    """The training example of one dialogue, dropping its earliest messages to fit max_seq_length.

    spans: (message index, start, end) character spans of routine values in the dialogue's messages;
    their token indices become `value_positions` (what `select_by: val_knowledge` scores).
    """
    system = system_prompt(prompt_cfg, dialog.get("character"))
    messages = dialog["messages"]
    starts = [k for k, m in enumerate(messages) if m["role"] == "user" or k == 0]  # whole exchanges only

    def example(first, cut=0):
        """The chat from message `first`; with `cut`, that many tokens dropped right after the system prompt."""
        chat = chat_messages(system, messages[first:])
        ids, labels = supervised_sequence(tokenizer, chat, LOSS_ROLES[loss_on])
        kept = [(k - first + 1, a, b) for k, a, b in spans if k >= first]  # chat index 0 is the system message
        positions = value_positions(tokenizer, chat, kept) if kept else []
        head = len(_ids(tokenizer, chat[:1])) if cut else 0  # the system prompt is never cut
        return {"input_ids": ids[:head] + ids[head + cut:], "labels": labels[:head] + labels[head + cut:],
                "value_positions": [i if i < head else i - cut for i in positions if i < head or i >= head + cut],
                "truncated": cut > 0}

    for first in starts:
        if not any(m["role"] == "assistant" for m in messages[first:]):
            break
        if len(_ids(tokenizer, chat_messages(system, messages[first:]))) <= max_seq_length:
            return example(first)
    # the last exchange alone is too long: the last resort cuts the start of its text, after the system prompt
    first = max(0, len(messages) - 2)
    return example(first, max(0, len(_ids(tokenizer, chat_messages(system, messages[first:]))) - max_seq_length))


def _example_columns(dialog, index, tokenizer, prompt_cfg, max_seq_length, loss_on, value_spans):
    return dialog_example(tokenizer, dialog, prompt_cfg, max_seq_length, loss_on, value_spans.get(str(index), ()))


def tokenized_dialogs(tokenizer, dialogs_path, prompt_cfg, max_seq_length, loss_on="assistant", value_spans=None):
    """Every dialogue of the cleaned file as a training example (row i = line i), cached by `datasets`.

    value_spans: {dialogue index: [(message index, start, end)]}, the routine values whose tokens
    `val_scores` scores (validation dialogues; the evaluation layer finds them).
    """
    from datasets import load_dataset

    if prompt_cfg.retrieval:
        raise UserError("training with retrieved dialogues in the prompt is not supported: set prompt.retrieval "
                        "to false in the training config (the retrieval arm is a prompt-only arm)")
    dialogs = load_dataset("json", data_files=str(dialogs_path), split="train")
    spans = {str(i): [list(s) for s in v] for i, v in sorted((value_spans or {}).items())}
    return dialogs.map(_example_columns, with_indices=True, remove_columns=dialogs.column_names,
                       desc="tokenizing dialogues",
                       fn_kwargs={"tokenizer": tokenizer, "prompt_cfg": prompt_cfg, "max_seq_length": max_seq_length,
                                  "loss_on": loss_on, "value_spans": spans})


def select_examples(examples, indices):
    """The examples of some dialogues, as plain {input_ids, labels, value_positions, truncated} dicts."""
    return examples.select(indices).to_list() if len(indices) else []


def truncated_count(examples):
    """How many examples had to be cut to fit max_seq_length even after dropping earlier exchanges."""
    return sum(bool(e.get("truncated")) for e in examples)


def collate(examples, pad_id):
    """Right-padded (input_ids, attention_mask, labels) tensors; labels padded with IGNORE."""
    width = max(len(e["input_ids"]) for e in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e["input_ids"])
        input_ids[row, :n] = torch.tensor(e["input_ids"])
        labels[row, :n] = torch.tensor(e["labels"])
        attention[row, :n] = 1
    return input_ids, attention, labels


def _position_losses(model, input_ids, attention, targets, keep):
    """Cross-entropy of targets[keep] (targets: the next token of each position) and the row of each.

    The vocabulary projection runs only at the kept positions: full logits for a batch of long
    dialogues are gigabytes (4 x 600 x 49k floats, plus their gradient) for the ~third of the
    tokens that carry a label.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    attention, extra = prefix_inputs(model, attention)
    hidden = causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention, **extra).last_hidden_state
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    token_loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(targets)[keep]
    return token_loss, rows


def supervised_losses(model, input_ids, attention, labels):
    """(loss sum, supervised token count) per example of a batch."""
    targets = labels[:, 1:]
    keep = targets != IGNORE
    token_loss, rows = _position_losses(model, input_ids, attention, targets, keep)
    sums = torch.zeros(input_ids.shape[0], device=input_ids.device).index_add(0, rows, token_loss)
    return sums, keep.sum(dim=1)


@dataclass(frozen=True)
class ValScore:
    """One adapter's validation figures after an epoch (None where its val set has nothing to score)."""
    loss: float = None       # mean cross-entropy of the supervised tokens
    knowledge: float = None  # mean log-probability of the routine values' tokens


@torch.no_grad()
def val_scores(model, example_sets, pad_id, route=None, batch_size=8):
    """A ValScore per set of examples, from one forward pass per batch.

    `route(slots)` is called before each batch with the set index of every row: the stacked
    trainer uses it to send each row through its own persona's adapter.
    """
    was_training = model.training
    model.eval()
    items = [(slot, e) for slot, examples in enumerate(example_sets) for e in examples]
    sums = torch.zeros((2, len(example_sets)), dtype=torch.float64)  # loss, value log-prob
    counts = torch.zeros((2, len(example_sets)), dtype=torch.float64)
    device = next(model.parameters()).device
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        input_ids, attention, labels = (t.to(device) for t in collate([e for _, e in chunk], pad_id))
        slots = torch.tensor([slot for slot, _ in chunk])
        if route is not None:
            route(slots.to(device))
        targets = input_ids[:, 1:]
        supervised = labels[:, 1:] != IGNORE
        values = torch.zeros_like(supervised)
        for row, (_, e) in enumerate(chunk):
            values[row, [p - 1 for p in e.get("value_positions", []) if 0 < p < input_ids.shape[1]]] = True
        token_loss, rows = _position_losses(model, input_ids, attention, targets, supervised | values)
        row_slots = slots.to(device)[rows]
        for kind, mask in enumerate((supervised, values)):
            picked = mask[supervised | values]
            sums[kind].index_add_(0, row_slots[picked].cpu(), token_loss[picked].double().cpu() * (1 if kind == 0 else -1))
            counts[kind].index_add_(0, row_slots[picked].cpu(), torch.ones(int(picked.sum()), dtype=torch.float64))
    model.train(was_training)
    mean = [[float(s / c) if c else None for s, c in zip(sums[kind], counts[kind])] for kind in (0, 1)]
    return [ValScore(loss, knowledge) for loss, knowledge in zip(*mean)]


def mean_loss(model, examples, pad_id):
    """Assistant-token mean cross-entropy over examples: the val loss every trainer reports."""
    return val_scores(model, [examples], pad_id)[0].loss


def forward_backward_rate(model, examples, pad_id, repeats=3):
    """Tokens per second of a forward and backward pass through the frozen model on `examples`: the
    floor under any adapter's training rate.

    The gradient flows from the supervised tokens' loss back to the input embeddings through every
    layer, as LoRA's must; no weight gradient is computed, so LoRA's own small matmuls, the optimizer
    and the validation passes are what a trainer's rate adds above it. The first pass warms up and is
    not timed.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    flags = [(p, p.requires_grad) for p in causal_lm.parameters()]
    device = next(causal_lm.parameters()).device
    was_training = causal_lm.training
    causal_lm.eval()
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        tokens, seconds = 0, 0.0
        for k, e in enumerate([examples[0]] * (repeats + 1)):
            input_ids, attention, labels = (t.to(device) for t in collate([e], pad_id))
            t0 = time.perf_counter()
            embeds = causal_lm.get_input_embeddings()(input_ids).detach().requires_grad_()
            hidden = causal_lm.get_decoder()(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
            keep = labels[:, 1:] != IGNORE
            logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
            torch.nn.functional.cross_entropy(logits, labels[:, 1:][keep]).backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if k:
                tokens, seconds = tokens + int(attention.sum()), seconds + time.perf_counter() - t0
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        causal_lm.train(was_training)
    return tokens / seconds


def epoch_batches(n_examples, batch_size, rng):
    """One epoch's batches of example indices, shuffled by `rng`."""
    order = list(range(n_examples))
    rng.shuffle(order)
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def lr_factor(cfg, steps_per_epoch):
    """The learning-rate factor of each optimizer step: transformers' linear warmup (warmup_ratio) then
    linear decay to 0, over each epoch when the kept epoch is selected on validation, else over all
    epochs (module docstring)."""
    from transformers import get_linear_schedule_with_warmup

    cycle = steps_per_epoch * (cfg.epochs if cfg.select_by == "last" else 1)
    probe = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    base = get_linear_schedule_with_warmup(probe, int(cfg.warmup_ratio * cycle), cycle).lr_lambdas[0]
    return lambda step: base(step % cycle)


class TrainingDiverged(ValueError):
    """An adapter whose training left no epoch to keep (every loss NaN or infinite)."""


class BestEpoch:
    """Epoch selection for one adapter (training.select_by): the epoch log, the kept epoch's weights, when to stop.

    Where the selection score is undefined (no val examples, no routine value in them), the last
    epoch is kept. Training stops once more than `patience` epochs in a row fail to improve on the best
    (patience 1: two in a row).
    """

    def __init__(self, patience, n_train, n_val, select_by="val_loss"):
        self.patience, self.bad_epochs, self.start, self.select_by = patience, 0, time.perf_counter(), select_by
        self.best_score, self.best_epoch, self.state = math.inf, None, None
        self.log = {"epochs": [], "train_examples": n_train, "val_examples": n_val, "select_by": select_by,
                    "train_tokens": 0, "supervised_tokens": 0, "optimizer_steps": 0,
                    "step_train_loss": [], "step_learning_rate": []}

    def end_step(self, loss, learning_rate):
        """Record one optimizer step: its mean supervised-token loss and the learning rate it ran with."""
        self.log["optimizer_steps"] += 1
        self.log["step_train_loss"].append(loss)
        self.log["step_learning_rate"].append(learning_rate)

    def end_epoch(self, train_loss_sum, supervised_tokens, val, snapshot):
        """Record an epoch (val: its ValScore); `snapshot()` returns the weights to keep if it is the best.
        True: stop now."""
        epoch = len(self.log["epochs"]) + 1
        self.log["supervised_tokens"] += supervised_tokens
        self.log["epochs"].append({"epoch": epoch, "train_loss": train_loss_sum / max(supervised_tokens, 1),
                                   "val_loss": val.loss, "val_knowledge": val.knowledge,
                                   "optimizer_steps": self.log["optimizer_steps"],
                                   "seconds": time.perf_counter() - self.start})
        score = {"val_loss": val.loss, "val_knowledge": None if val.knowledge is None else -val.knowledge,
                 "last": None}[self.select_by]
        score = -epoch if score is None else score
        diverged = not math.isfinite(score) or (val.loss is not None and not math.isfinite(val.loss)) \
            or not math.isfinite(train_loss_sum)
        if not diverged and score < self.best_score:
            self.best_score, self.best_epoch, self.state, self.bad_epochs = score, epoch, snapshot(), 0
            return False
        self.bad_epochs += 1
        return self.bad_epochs > self.patience

    def finish(self):
        """The training log, with the best epoch's figures; TrainingDiverged if no epoch could be kept."""
        if self.best_epoch is None:
            losses = ", ".join(f"{e['val_loss']}" for e in self.log["epochs"])
            raise TrainingDiverged(f"no epoch to keep: the loss is not finite in every epoch (val loss {losses}); "
                                   f"the learning rate may be too high")
        best = self.log["epochs"][self.best_epoch - 1]
        self.log.update(best_epoch=self.best_epoch, best_val_loss=best["val_loss"],
                        best_val_knowledge=best["val_knowledge"], final_train_loss=best["train_loss"],
                        seconds=time.perf_counter() - self.start)
        return self.log


def trainable_state(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def load_trainable_state(model, state):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def train_adapter(model, train_examples, val_examples, cfg, pad_id, seed, desc="training", progress=True):
    """Train the model's trainable (LoRA) parameters; keep the epoch training.select_by selects.

    cfg: the config's `training` section; seed: the run's (it orders the batches). Returns the training log.
    """
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train_examples) / cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps_per_epoch))
    rng = random.Random(seed)
    tracker = BestEpoch(cfg.early_stopping_patience, len(train_examples), len(val_examples), cfg.select_by)
    bar = tqdm(total=steps_per_epoch * cfg.epochs, desc=desc, unit="step", leave=False, disable=not progress)
    model.train()
    for _ in range(cfg.epochs):
        loss_total, tokens_total = 0.0, 0
        for batch_ix in epoch_batches(len(train_examples), cfg.batch_size, rng):
            input_ids, attention, labels = (t.to(device) for t in collate([train_examples[i] for i in batch_ix], pad_id))
            sums, counts = supervised_losses(model, input_ids, attention, labels)
            loss_sum, n = sums.sum(), int(counts.sum())
            (loss_sum / max(n, 1)).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
            tracker.end_step(loss_sum.item() / max(n, 1), optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_total, tokens_total = loss_total + loss_sum.item(), tokens_total + n
            tracker.log["train_tokens"] += int(attention.sum())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum.item() / max(n, 1):.3f}")
        if tracker.end_epoch(loss_total, tokens_total, val_scores(model, [val_examples], pad_id)[0],
                             lambda: trainable_state(model)):
            break
    bar.close()
    model.eval()
    log = tracker.finish()
    load_trainable_state(model, tracker.state)
    return log


def training_settings(cfg, arm):
    """The `training` section an arm trains with: for the prefix arms with `prefix.learning_rate` where set
    (a prefix is a few vectors trained from a random start, not a low-rank change of trained weights, and
    needs another step size than LoRA)."""
    if ARMS[arm].kind == PREFIX and cfg.prefix.learning_rate is not None:
        return dataclasses.replace(cfg.training, learning_rate=cfg.prefix.learning_rate)
    return cfg.training


class AdapterTrainer:
    """Holds the base model once and trains a fresh PEFT adapter (LoRA, or prefix tuning for the prefix
    arms) for each job, one after another."""

    def __init__(self, model, tokenizer, cfg, examples, arm="lora_per_user"):
        self.model, self.tokenizer, self.cfg, self.examples, self.arm = model, tokenizer, cfg, examples, arm
        self.peft_model = None

    def train(self, job, extra_log):
        """Train job (an AdapterJob), save it as a PEFT folder; returns its training log."""
        if not job.train:
            raise UserError("no train dialogues")
        train_examples = select_examples(self.examples, job.train)
        val_examples = select_examples(self.examples, job.val)
        adapter = self.fresh_adapter(f"job_{job.name}_s{job.seed}", job.seed)
        try:
            log = train_adapter(self.peft_model, train_examples, val_examples, training_settings(self.cfg, self.arm),
                                self.tokenizer.pad_token_id, job.seed, desc=job.name)
            log.update(extra_log, persona_id=job.name, truncated_examples=truncated_count(train_examples))
            save_adapter(self.peft_model, adapter, job.folder, log)
        finally:
            self.release(adapter)
        return log

    def fresh_adapter(self, adapter, seed):
        """A new active adapter, initialised from the job's seed (same persona, same start). A prefix
        adapter gets a fresh PEFT wrapper of its own: prefix tuning leaves the base model's modules as
        they are, so wrapping it again costs nothing."""
        from peft import get_peft_model

        torch.manual_seed(seed)
        config = peft_config(self.cfg, self.arm)
        if self.peft_model is None or ARMS[self.arm].kind == PREFIX:
            self.peft_model = get_peft_model(self.model, config, adapter_name=adapter)
        else:
            self.peft_model.add_adapter(adapter, config)
            self.peft_model.set_adapter(adapter)
        return adapter

    def release(self, adapter):
        """Drop a finished adapter (PEFT keeps the last one: a model needs at least one)."""
        if ARMS[self.arm].kind == PREFIX:
            self.peft_model = None
        elif len(self.peft_model.peft_config) > 1:
            self.peft_model.delete_adapter(adapter)
