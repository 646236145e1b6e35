"""Batched greedy (or seeded sampled) generation with left padding, sorted by length.

Sorting prompts by length makes each batch nearly pad-free; left padding keeps every row's last
prompt token at the same position, so the new tokens of a batch line up. With PEFT adapters loaded
into one model, `adapter_names` gives each row its own adapter: rows are grouped by adapter so
that most batches run one adapter directly and only the batches at group boundaries mix adapters
(PEFT routes each row of a mixed batch through its own adapter).
"""

import torch
from tqdm.auto import tqdm


def stop_token_ids(model, tokenizer):
    """The model's own end-of-turn tokens (its generation_config), else the tokenizer's eos."""
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    return sorted(set(eos if isinstance(eos, list) else [eos]))


def encode_prompts(tokenizer, prompts):
    """Token ids of rendered prompts (the chat template already holds the special tokens)."""
    return [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]


def padded_batch(tokenizer, id_lists, device):
    """(input_ids, attention_mask) of token id lists, padded on the tokenizer's side (left for generation)."""
    batch = tokenizer.pad({"input_ids": id_lists}, padding=True, return_tensors="pt")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def generation_kwargs(model, tokenizer, gen_cfg):
    kwargs = {"max_new_tokens": gen_cfg["max_new_tokens"], "do_sample": gen_cfg["do_sample"],
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": stop_token_ids(model, tokenizer)}
    if gen_cfg["do_sample"]:
        kwargs.update(temperature=gen_cfg["temperature"], top_p=gen_cfg["top_p"])
    else:  # silence the model's own sampling defaults
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _generate(model, input_ids, attention, kwargs, names):
    """model.generate; a batch of one adapter runs it directly, a mixed batch routes rows (PEFT adapter_names)."""
    if names is None:
        return model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    if len(set(names)) > 1:
        return model.generate(input_ids=input_ids, attention_mask=attention, adapter_names=names, **kwargs)
    if names[0] == "__base__":
        with model.disable_adapter():
            return model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    model.set_adapter(names[0])
    return model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts, gen_cfg, batch_size=None, adapter_names=None,
                   desc="generating", progress=True):
    """Replies for rendered prompts, in the prompts' order."""
    batch_size = batch_size or gen_cfg["batch_size"]
    ids = encode_prompts(tokenizer, prompts)
    if adapter_names is None:
        order = sorted(range(len(prompts)), key=lambda i: -len(ids[i]))
    else:  # one adapter's rows together: most batches need one adapter, only boundary batches mix
        order = sorted(range(len(prompts)), key=lambda i: (adapter_names[i], -len(ids[i])))
    kwargs = generation_kwargs(model, tokenizer, gen_cfg)
    device = next(model.parameters()).device
    if gen_cfg["do_sample"]:
        torch.manual_seed(gen_cfg["seed"])
    replies = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="turn", disable=not progress)
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        input_ids, attention = padded_batch(tokenizer, [ids[i] for i in rows], device)
        out = _generate(model, input_ids, attention, kwargs, [adapter_names[i] for i in rows] if adapter_names else None)
        for row, tokens in zip(rows, out[:, input_ids.shape[1]:]):
            replies[row] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
        bar.update(len(rows))
    bar.close()
    return replies
