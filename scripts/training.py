"""LoRA training on whole dialogues with the loss on assistant tokens only.

One sequence per dialogue: the prompt builder's system message, then the dialogue, rendered with
the model's chat template. Labels are -100 everywhere except each assistant message's content and
its end-of-turn token, so every assistant turn is supervised while each dialogue is read once per
epoch (the per-turn recipe re-reads the growing history once per assistant turn).
"""

import math
import random
import time

import torch
from tqdm.auto import tqdm

from scripts.prompting import chat_messages, system_prompt

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


def supervised_sequence(tokenizer, messages):
    """(input_ids, labels) for chat messages; labels keep assistant content + its end-of-turn token."""
    input_ids = _ids(tokenizer, messages)
    labels = [IGNORE] * len(input_ids)
    eot = end_of_turn_ids(tokenizer)
    keep_eot = eot[:1]  # <|im_end|>: the model must learn to stop; the newline after it is template glue
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = len(_ids(tokenizer, messages[:k], add_generation_prompt=True))
        end = len(_ids(tokenizer, messages[: k + 1])) - len(eot) + len(keep_eot)
        if input_ids[:start] != _ids(tokenizer, messages[:k], add_generation_prompt=True):
            raise ValueError("chat template does not render prefixes as token prefixes; cannot mask by position")
        labels[start:end] = input_ids[start:end]
    return input_ids, labels


def dialog_example(tokenizer, dialog, prompt_cfg, max_seq_length, retrieved=()):
    """The training example of one dialogue, dropping its earliest messages to fit max_seq_length."""
    system = system_prompt(prompt_cfg, dialog.get("character"), retrieved)
    messages = dialog["messages"]
    starts = [k for k, m in enumerate(messages) if m["role"] == "user" or k == 0]  # whole exchanges only
    for first in starts:
        rest = messages[first:]
        if not any(m["role"] == "assistant" for m in rest):
            break
        ids, labels = supervised_sequence(tokenizer, chat_messages(system, rest))
        if len(ids) <= max_seq_length:
            return {"input_ids": ids, "labels": labels}
    ids, labels = supervised_sequence(tokenizer, chat_messages(system, messages[-2:]))
    return {"input_ids": ids[-max_seq_length:], "labels": labels[-max_seq_length:]}


def collate(examples, pad_id):
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


def token_losses(model, input_ids, attention, labels):
    """(sum of assistant-token losses, number of assistant tokens) for a batch.

    The vocabulary projection runs only at supervised positions: full logits for a batch of long
    dialogues are gigabytes (4 x 600 x 49k floats, plus their gradient) for the ~third of the
    tokens that carry a label.
    """
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = causal_lm.get_decoder()(input_ids=input_ids, attention_mask=attention).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = causal_lm.get_output_embeddings()(hidden[:, :-1][keep]).float()
    loss = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum")
    return loss, int(keep.sum())


@torch.no_grad()
def mean_loss(model, examples, pad_id, batch_size=8):
    """Assistant-token mean cross-entropy over examples: the val loss every trainer is judged by."""
    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(examples), batch_size):
        batch = [t.to(device) for t in collate(examples[start:start + batch_size], pad_id)]
        loss, n = token_losses(model, *batch)
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / count if count else None


def trainable_state(model):
    return {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}


def load_trainable_state(model, state):
    params = dict(model.named_parameters())
    with torch.no_grad():
        for k, v in state.items():
            params[k].copy_(v)


def lr_lambda(warmup_steps, total_steps):
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))
    return factor


def train_adapter(model, train_examples, val_examples, cfg, pad_id, desc="training", progress=True):
    """Train the model's trainable (LoRA) parameters; keep the best epoch by val loss.

    cfg: the config's `training` section. Returns the training log.
    """
    start_time = time.perf_counter()
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg["learning_rate"], weight_decay=cfg["weight_decay"])
    steps_per_epoch = math.ceil(len(train_examples) / cfg["batch_size"])
    total_steps = steps_per_epoch * cfg["epochs"]
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lr_lambda(max(1, int(cfg["warmup_ratio"] * total_steps)), total_steps))
    order_rng = random.Random(cfg["seed"])
    log = {"epochs": [], "train_examples": len(train_examples), "val_examples": len(val_examples),
           "train_tokens": 0, "supervised_tokens": 0}
    best = {"val_loss": math.inf, "epoch": None, "state": None}
    bad_epochs = 0
    bar = tqdm(total=total_steps, desc=desc, unit="step", leave=False, disable=not progress)
    model.train()
    for epoch in range(1, cfg["epochs"] + 1):
        order = list(range(len(train_examples)))
        order_rng.shuffle(order)
        epoch_loss, epoch_tokens = 0.0, 0
        for start in range(0, len(order), cfg["batch_size"]):
            batch = [train_examples[i] for i in order[start:start + cfg["batch_size"]]]
            input_ids, attention, labels = (t.to(device) for t in collate(batch, pad_id))
            loss_sum, n = token_losses(model, input_ids, attention, labels)
            (loss_sum / max(n, 1)).backward()
            torch.nn.utils.clip_grad_norm_(params, cfg["max_grad_norm"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            epoch_loss, epoch_tokens = epoch_loss + loss_sum.item(), epoch_tokens + n
            log["train_tokens"] += int(attention.sum())
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum.item() / max(n, 1):.3f}")
        log["supervised_tokens"] += epoch_tokens
        val_loss = mean_loss(model, val_examples, pad_id)
        log["epochs"].append({"epoch": epoch, "train_loss": epoch_loss / max(epoch_tokens, 1), "val_loss": val_loss,
                              "seconds": time.perf_counter() - start_time})
        score = val_loss if val_loss is not None else -epoch  # no val split: the last epoch is best
        if score < best["val_loss"]:
            best = {"val_loss": score, "epoch": epoch, "state": trainable_state(model)}
            bad_epochs = 0
        else:
            bad_epochs += 1
            if bad_epochs > cfg["early_stopping_patience"]:
                break
    bar.close()
    load_trainable_state(model, best["state"])
    model.eval()
    log["best_epoch"] = best["epoch"]
    log["best_val_loss"] = log["epochs"][best["epoch"] - 1]["val_loss"]
    log["final_train_loss"] = log["epochs"][best["epoch"] - 1]["train_loss"]
    log["seconds"] = time.perf_counter() - start_time
    return log
