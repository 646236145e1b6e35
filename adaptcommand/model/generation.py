"""Batched greedy (or seeded sampled) generation that reads each dialogue's history once.

Every assistant turn of a dialogue is predicted from the ground-truth history before it, so turn
k's prompt is usually a prefix of turn k+1's. Prompts are grouped into chains (same dialogue,
same arm and adapter, each prompt's token ids extending the previous one's). A chain's longest
prompt is prefilled once into a key/value cache; every turn of the chain then decodes from the
slice of that cache its own prompt covers, and turns of many chains decode together in one batch.
So prefill costs about each dialogue's tokens once, and decoding runs batch_size turns per step.
A prompt that does not extend the previous one (the history window slid past the first message,
or retrieved dialogues changed) starts a new chain. The prefill's rows are right-padded (a causal mask
alone then hides the pads), the decoding rows left-padded and masked; positions count only real
tokens, so each turn sees exactly the cache a fresh prefill of its prompt gives.

With LoRA adapters in an AdapterStore (adaptcommand/model/serving.py) or a PEFT model,
`adapter_names` gives each prompt its own adapter (an adapter changes K and V, so a chain never
crosses adapters): chains are ordered by adapter so most batches run one adapter and only boundary
batches mix adapters (each row of a mixed batch goes through its own adapter). Prefix-tuned adapters (the prefix arms) run one
adapter at a time (PEFT cannot mix them in a batch): each adapter's chains go through the same
path, with the adapter's trained prefix at the front of every cache (`prefix_front`) and the
prompt's positions counted after it, as PEFT's forward counts them.
"""

from dataclasses import dataclass
from itertools import groupby

import torch
from tqdm.auto import tqdm

from adaptcommand.model.adapters import is_prefix_tuned, prefix_inputs
from adaptcommand.model.serving import BASE, store_of


def stop_token_ids(model, tokenizer):
    """The model's own end-of-turn tokens (its generation_config), else the tokenizer's eos."""
    eos = model.generation_config.eos_token_id if model.generation_config is not None else None
    if eos is None:
        eos = tokenizer.eos_token_id
    return sorted(set(eos if isinstance(eos, list) else [eos]))


def encode_prompts(tokenizer, prompts):
    """Token ids of rendered prompts (the chat template already holds the special tokens), each distinct prompt
    tokenized once: arms with the same prompt settings, and every seed of an arm, ask for the same prompts."""
    ids = {p: tokenizer(p, add_special_tokens=False)["input_ids"] for p in dict.fromkeys(prompts)}
    return [ids[p] for p in prompts]


def padded_batch(tokenizer, id_lists, device):
    """(input_ids, attention_mask) of token id lists, padded on the tokenizer's side (left for generation)."""
    batch = tokenizer.pad({"input_ids": id_lists}, padding=True, return_tensors="pt")
    return batch["input_ids"].to(device), batch["attention_mask"].to(device)


def right_padded_batch(id_lists, pad_id, device):
    """(input_ids, attention_mask) of token id lists padded on the right: in a causal model's prefill the pads
    then come after every real token, so no padding mask is needed and attention takes its causal fast path."""
    width = max(map(len, id_lists))
    ids = torch.tensor([row + [pad_id] * (width - len(row)) for row in id_lists], device=device)
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in id_lists], device=device)
    return ids, mask


def generation_kwargs(model, tokenizer, gen_cfg):
    kwargs = {"max_new_tokens": gen_cfg.max_new_tokens, "do_sample": gen_cfg.do_sample,
              "pad_token_id": tokenizer.pad_token_id, "eos_token_id": stop_token_ids(model, tokenizer)}
    if gen_cfg.do_sample:
        kwargs.update(temperature=gen_cfg.temperature, top_p=gen_cfg.top_p)
    else:  # silence the model's own sampling defaults
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


@dataclass
class GenerationStats:
    """Tokens run through the model: prompt tokens prefilled (pads excluded) and tokens generated."""
    prefilled: int = 0
    generated: int = 0


def _routed(model, names, call):
    """call(**extra) with each row's adapter: an AdapterStore routes every row itself; on a PEFT model one
    adapter runs directly and a mix goes through PEFT's adapter_names."""
    if names is None:
        return call()
    if store_of(model) is not None:
        store_of(model).route(names)
        return call()
    if len(set(names)) > 1:
        return call(adapter_names=names)
    if names[0] == BASE:
        with model.disable_adapter():
            return call()
    model.set_adapter(names[0])
    return call()


def _generate(model, input_ids, attention, kwargs, names, cache):
    if is_prefix_tuned(model):  # the active prefix adapter: the cache already starts with its prefix
        return prefix_generate(model, input_ids, attention, kwargs, cache)
    return _routed(model, names, lambda **extra: model.generate(input_ids=input_ids, attention_mask=attention,
                                                                cache=cache, **kwargs, **extra))


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


def prefix_front(model):
    """How many cache positions come before the prompt: a prefix-tuned model's virtual tokens, else 0."""
    return model.active_peft_config.num_virtual_tokens if is_prefix_tuned(model) else 0


def _forward_cache(model, tokens, mask, names):
    """The key/value cache of a right-padded batch (logits only at the last position: they are not needed).
    Pads come after every real token, so a causal mask alone keeps each row's tokens from seeing them and
    no padding mask is passed: attention then takes its causal fast path (about twice as fast on a CPU as
    with a mask). The pads' own cache entries are never read. For a prefix-tuned model it is the active
    adapter's prefix followed by the batch's tokens."""
    if is_prefix_tuned(model):
        positions = torch.arange(tokens.shape[1], device=tokens.device)[None] + prefix_front(model)
        full_mask, prefix = prefix_inputs(model, mask)
        return model.get_base_model()(input_ids=tokens, attention_mask=full_mask, position_ids=positions,
                                      use_cache=True, logits_to_keep=1, **prefix).cache
    return _routed(model, names, lambda **extra: model(input_ids=tokens, use_cache=True, logits_to_keep=1,
                                                       **extra).cache)


def turn_cache(model, cache, rows, lengths, front=0, room=0):
    """A left-padded cache for a batch of turns: turn r holds `cache` row rows[r]'s first front positions (a
    prefix; they sit before the pads) and then its first lengths[r] tokens after them. Each layer's rows are
    gathered in one indexing op; the pads repeat a real position (the attention mask hides them).

    room: tokens the cache will still take (the new tokens of generate). With room, the cache is a
    StaticCache that writes each step's keys and values in place: a DynamicCache copies the whole cache
    at every step (torch.cat)."""
    from transformers import DynamicCache, StaticCache

    width = max(lengths)
    device = cache.layers[0].keys.device
    lengths = torch.tensor(lengths, device=device)[:, None]
    after = torch.arange(width, device=device)[None] - (width - lengths)  # each turn's token index, < 0 on pads
    index = torch.cat([torch.arange(front, device=device)[None].expand(len(rows), front),
                       front + after.clamp(min=0)], dim=1)  # (turns, front + width) positions of the source row
    source_rows = torch.tensor(rows, device=device)[:, None]
    out = StaticCache(config=model.config, max_cache_len=front + width + room) if room else \
        DynamicCache(config=model.config)
    for k, layer in enumerate(cache.layers):
        # (turns, positions, heads, dim) gathered, then back to the cache's (turns, heads, positions, dim)
        keys, values = (tensor.transpose(1, 2)[source_rows, index].transpose(1, 2)
                        for tensor in (layer.keys, layer.values))
        out.update(keys.contiguous(), values.contiguous(), k)
    return out


def _run_chains(model, tokenizer, ids, chains, names, kwargs, replies, stats, bar, on_replies, batch_size):
    """Generate every turn of a batch of chains: each chain's longest prompt is prefilled once, then every
    turn decodes from the slice of that cache its own prompt covers, batch_size turns at a time."""
    device = next(model.parameters()).device
    # the last token of each prompt is fed by generate itself, so the cache stops one short of it
    tokens, mask = right_padded_batch([ids[chain[-1]][:-1] for chain in chains], tokenizer.pad_token_id, device)
    chain_names = [names[chain[-1]] for chain in chains] if names else None
    cache = _forward_cache(model, tokens, mask, chain_names) if tokens.shape[1] else None
    stats.prefilled += sum(len(ids[chain[-1]]) for chain in chains)
    front = prefix_front(model)  # cache positions before the prompt (a prefix adapter's)
    turns = [(c, i) for c, chain in enumerate(chains) for i in chain]
    for start in range(0, len(turns), batch_size):
        rows = turns[start:start + batch_size]
        prompts = [i for _, i in rows]
        turn_tokens, turn_mask = padded_batch(tokenizer, [ids[i] for i in prompts], device)
        rows_cache = turn_cache(model, cache, [c for c, _ in rows], [len(ids[i]) - 1 for i in prompts], front,
                                room=kwargs["max_new_tokens"])
        out = _generate(model, turn_tokens, turn_mask, kwargs, [names[i] for i in prompts] if names else None,
                        rows_cache)
        for i, generated in zip(prompts, out[:, front + turn_tokens.shape[1]:]):
            replies[i] = tokenizer.decode(generated, skip_special_tokens=True).strip()
            stats.generated += int((generated != tokenizer.pad_token_id).sum())
        if on_replies is not None:
            on_replies(prompts, [replies[i] for i in prompts])
        bar.update(len(prompts))


def prefix_generate(model, input_ids, attention, kwargs, cache=None):
    """generate() for a left-padded batch through a prefix-tuned PEFT model's active adapter: its prefix is
    the cache the prompt continues (filler ids stand for it; `cache`, if given, already holds the prefix and
    part of the prompt) and positions count only real tokens, so a padded row gets what it gets alone.
    (PEFT's own generate counts the pads of a padded row as positions.) Returns generate's output: the
    filler, the prompt, then the new tokens."""
    batch, virtual = input_ids.shape[0], prefix_front(model)
    mask, prefix = prefix_inputs(model, attention)
    filler = torch.full((batch, virtual), kwargs["pad_token_id"], dtype=input_ids.dtype, device=input_ids.device)
    return model.get_base_model().generate(input_ids=torch.cat([filler, input_ids], dim=1), attention_mask=mask,
                                           **(prefix if cache is None else {"cache": cache}), **kwargs)


@torch.inference_mode()
def generate_texts(model, tokenizer, prompts, gen_cfg, batch_size=None, adapter_names=None,
                   desc="generating", progress=True, chain_keys=None, stats=None, on_replies=None):
    """Replies for rendered prompts, in the prompts' order.

    chain_keys: per prompt, what it shares a key/value cache with (a dialogue and arm, in turn
    order); None: every prompt on its own. stats: a GenerationStats to add the token counts to.
    on_replies(indices, replies): called as each batch step finishes (to checkpoint them).
    """
    batch_size = batch_size or gen_cfg.batch_size
    stats = stats if stats is not None else GenerationStats()
    ids = encode_prompts(tokenizer, prompts)
    keys = chain_keys if chain_keys is not None else range(len(prompts))
    if adapter_names is not None:
        keys = [(name, key) for name, key in zip(adapter_names, keys)]
    chains = prompt_chains(ids, keys)
    # one adapter's chains together, then long chains first: batches of similar shape
    chains.sort(key=lambda c: (adapter_names[c[0]] if adapter_names else "", -len(c), -len(ids[c[-1]])))
    kwargs = generation_kwargs(model, tokenizer, gen_cfg)
    if gen_cfg.do_sample:
        torch.manual_seed(gen_cfg.seed)
    replies = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="turn", disable=not progress)
    if is_prefix_tuned(model):  # one prefix adapter at a time: each adapter's chains on their own
        for name, its_chains in groupby(chains, key=lambda c: adapter_names[c[0]] if adapter_names else None):
            if name is not None:
                model.set_adapter(name)
            for group in _chain_groups(list(its_chains), batch_size):
                _run_chains(model, tokenizer, ids, group, None, kwargs, replies, stats, bar, on_replies, batch_size)
    else:
        for group in _chain_groups(chains, batch_size):
            _run_chains(model, tokenizer, ids, group, adapter_names, kwargs, replies, stats, bar, on_replies,
                        batch_size)
    bar.close()
    return replies


def _chain_groups(chains, batch_size):
    """Chains in groups holding about batch_size turns: one prefill per group, then its turns in batches."""
    group = []
    for chain in chains:
        if group and sum(map(len, group)) + len(chain) > batch_size:
            yield group
            group = []
        group.append(chain)
    if group:
        yield group
