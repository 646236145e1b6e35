"""Batched greedy (or seeded sampled) generation that reads each dialogue's history once.

Every assistant turn of a dialogue is predicted from the ground-truth history before it, so turn
k's prompt is usually a prefix of turn k+1's. Prompts are grouped into chains (same dialogue,
same arm and adapter, each prompt's token ids extending the previous one's); a batch runs several
chains in lockstep with one key/value cache: prefill the first turn, generate, crop the cache
back to the prompt (`DynamicCache.crop`), append the rest of the next prompt (the reference reply
and the next user message), generate again. A prompt that does not extend the previous one (the
history window slid past the first message, or retrieved dialogues changed) starts a new chain.
Each new segment is left-padded inside the batch and masked, so every row's last prompt token
lines up and positions count only real tokens.

With PEFT adapters loaded into one model, `adapter_names` gives each prompt its own adapter
(an adapter changes K and V, so a chain never crosses adapters): chains are grouped by adapter
so most batches run one adapter directly and only boundary batches mix adapters (PEFT routes each
row of a mixed batch through its own adapter).
"""

from dataclasses import dataclass

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


@dataclass
class GenerationStats:
    """Tokens run through the model: prompt tokens prefilled (pads excluded) and tokens generated."""
    prefilled: int = 0
    generated: int = 0


def _generate(model, input_ids, attention, kwargs, names, cache):
    """model.generate; a batch of one adapter runs it directly, a mixed batch routes rows (PEFT adapter_names)."""
    kwargs = {**kwargs, "past_key_values": cache}
    if names is None:
        return model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    if len(set(names)) > 1:
        return model.generate(input_ids=input_ids, attention_mask=attention, adapter_names=names, **kwargs)
    if names[0] == "__base__":
        with model.disable_adapter():
            return model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)
    model.set_adapter(names[0])
    return model.generate(input_ids=input_ids, attention_mask=attention, **kwargs)


def prompt_chains(ids, keys):
    """Runs of prompt indices with the same key, in order, each prompt's ids extending the previous one's."""
    chains, open_chain = [], {}
    for i, key in enumerate(keys):
        chain = open_chain.get(key)
        if chain is None or len(ids[i]) <= len(ids[chain[-1]]) or ids[i][: len(ids[chain[-1]])] != ids[chain[-1]]:
            chain = []
            chains.append(chain)
            open_chain[key] = chain
        chain.append(i)
    return chains


def _left_padded_block(segments, pad_id, device):
    width = max(len(s) for s in segments)
    block = torch.full((len(segments), width), pad_id, dtype=torch.long, device=device)
    mask = torch.zeros((len(segments), width), dtype=torch.long, device=device)
    for row, segment in enumerate(segments):
        if segment:
            block[row, width - len(segment):] = torch.tensor(segment, device=device)
            mask[row, width - len(segment):] = 1
    return block, mask


def _run_chains(model, tokenizer, ids, chains, names, kwargs, replies, stats, bar, on_replies):
    """Generate every turn of a batch of chains in lockstep, the cache cropped back to the prompt after each turn."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    cache = DynamicCache()
    tokens = torch.zeros((len(chains), 0), dtype=torch.long, device=device)
    mask = torch.zeros((len(chains), 0), dtype=torch.long, device=device)
    rows = list(range(len(chains)))  # batch row -> chain
    done = [0] * len(chains)         # tokens of each chain already in the cache
    for step in range(max(len(c) for c in chains)):
        keep = [r for r, c in enumerate(rows) if step < len(chains[c])]
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            tokens, mask, rows = tokens[index], mask[index], [rows[r] for r in keep]
        prompts = [chains[c][step] for c in rows]
        block, block_mask = _left_padded_block([ids[i][done[c]:] for c, i in zip(rows, prompts)],
                                               tokenizer.pad_token_id, device)
        tokens, mask = torch.cat([tokens, block], dim=1), torch.cat([mask, block_mask], dim=1)
        stats.prefilled += int(block_mask.sum())
        out = _generate(model, tokens, mask, kwargs, [names[i] for i in prompts] if names else None, cache)
        for i, generated in zip(prompts, out[:, tokens.shape[1]:]):
            replies[i] = tokenizer.decode(generated, skip_special_tokens=True).strip()
            stats.generated += int((generated != tokenizer.pad_token_id).sum())
        if on_replies is not None:
            on_replies(prompts, [replies[i] for i in prompts])
        surplus = cache.get_seq_length() - tokens.shape[1]  # the generated tokens: back to the prompt
        if surplus > 0:
            cache.crop(-surplus)
        for c, i in zip(rows, prompts):
            done[c] = len(ids[i])
        bar.update(len(prompts))


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts, gen_cfg, batch_size=None, adapter_names=None,
                   desc="generating", progress=True, chain_keys=None, stats=None, on_replies=None):
    """Replies for rendered prompts, in the prompts' order.

    chain_keys: per prompt, what it shares a key/value cache with (a dialogue and arm, in turn
    order); None: every prompt on its own. stats: a GenerationStats to add the token counts to.
    on_replies(indices, replies): called as each batch step finishes (to checkpoint them).
    """
    batch_size = batch_size or gen_cfg["batch_size"]
    stats = stats if stats is not None else GenerationStats()
    ids = encode_prompts(tokenizer, prompts)
    keys = chain_keys if chain_keys is not None else range(len(prompts))
    if adapter_names is not None:
        keys = [(name, key) for name, key in zip(adapter_names, keys)]
    chains = prompt_chains(ids, keys)
    # one adapter's chains together, then long chains first: batches of similar shape
    chains.sort(key=lambda c: (adapter_names[c[0]] if adapter_names else "", -len(c), -len(ids[c[-1]])))
    kwargs = generation_kwargs(model, tokenizer, gen_cfg)
    if gen_cfg["do_sample"]:
        torch.manual_seed(gen_cfg["seed"])
    replies = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="turn", disable=not progress)
    for start in range(0, len(chains), batch_size):
        _run_chains(model, tokenizer, ids, chains[start:start + batch_size], adapter_names, kwargs, replies, stats, bar,
                    on_replies)
    bar.close()
    return replies
