"""Preference cloze: does the model put this user's routine value first where the user states it?

Wherever a user message states a value of the session's applied routine ("set it to 22",
"a warm colour"), the message is cut just before the value and every candidate value of that
parameter is scored as its continuation, teacher-forced on the dialogue so far: the schema's
categories, or every integer of the parameter's range. Only knowledge can win:

- every candidate is written the same way (the schema's spelling; "arm"/"disarm" in the form the
  user used), so the answer never looks more natural than a distractor;
- each candidate is followed by the same next word of the message, or by the chat template's
  end-of-turn marker where the value ends the message, so "3" cannot win by being a prefix of "35";
- an item whose value was already stated earlier in the same dialogue (by anyone) measures
  copying, not memory: it is marked `in_context` and reported apart (cloze_in_context_top1).

An item is correct when the user's actual value has the highest log-probability.

No generation: one forward pass over the prefix and one over all the candidates, packed in one row
after its KV cache; the items of one dialogue share one prefill where their prompts extend each
other. So it is cheap on a CPU, and it measures knowledge even where replies ask back.
Beside each persona's top-1 accuracy, on exactly the same items: chance (the mean of 1 / candidates),
always answering the most common value of that parameter in every user's train dialogues
(majority), and always answering this user's own most common train value (habit; the population's
where the user never stated that parameter in train).
"""

import re
from collections import Counter
from dataclasses import dataclass

import torch

from adaptcommand.data.schema import DEVICES
from adaptcommand.evaluation.action_metrics import prescribed_settings
from adaptcommand.evaluation.routine_knowledge import EVERYONE
from adaptcommand.model.adapters import prefix_inputs
from adaptcommand.model.generation import turn_cache
from adaptcommand.model.serving import routes_adapters, store_of
from adaptcommand.model.prompting import build_turn_messages


@dataclass(frozen=True)
class ClozeItem:
    """One stated routine value: where it is, and the candidates for it (answer: the user's)."""
    persona_id: str
    dialog_index: int
    message_index: int
    device: str
    param: str
    value: object
    before: str        # the user's message up to the value
    after: str         # the next word after it ("" at the end of the message)
    candidates: tuple  # candidate texts, all written the same way
    answer: int        # index of the user's value among the candidates
    in_context: bool   # the value was already stated earlier in this dialogue


@dataclass(frozen=True)
class ClozeResult:
    persona_id: str
    arm: str
    seed: object  # the adapter's training seed; None for prompt arms
    dialog_index: int
    message_index: int
    correct: bool
    chance: float
    majority_correct: bool
    habit_correct: bool
    in_context: bool
    device: str
    param: str
    answer: str  # the user's value as the candidates write it
    picked: str  # the candidate the arm scored highest


def _value_span(text, param, value):
    """(start, end) of the value as written in the message, or None when it cannot be found once."""
    if param == "armed":
        pattern = r"\bdisarm(?:ed|ing)?\b" if value is False else r"\b(?<!dis)arm(?:ed|ing)?\b"
    elif isinstance(value, int):
        pattern = rf"(?<![\d.]){value}(?![\d])"
    else:
        pattern = r"\b" + r"[\s-]*".join(re.escape(part) for part in re.findall(r"[a-z]+|\d+", value.lower())) + r"\b"
    found = list(re.finditer(pattern, text, re.IGNORECASE))
    return found[0].span() if len(found) == 1 else None


def _candidates(device, param, written):
    spec = DEVICES[device][param]
    if spec[0] == "int":
        return tuple(str(n) for n in range(spec[1], spec[2] + 1))
    if spec[0] == "bool":
        base = written.lower().removeprefix("dis")
        return base, "dis" + base
    return tuple(spec[1])


def _answer_index(candidates, written, value, param):
    if param == "armed":
        return 0 if value else 1
    if isinstance(value, int):
        return candidates.index(written) if written in candidates else None
    return candidates.index(value) if value in candidates else None


def cloze_items(dialogs, indices_by_persona, actions_of):
    """Every stated routine value in the given dialogues ({persona: indices}); actions_of(index) gives
    the actions of each message of a dialogue (adaptcommand/evaluation/routine_knowledge.message_actions)."""
    items = []
    for persona, indices in indices_by_persona.items():
        for index in indices:
            dialog = dialogs[index]
            prescribed = prescribed_settings(dialog.get("meta"), dialog.get("routines") or [],
                                             dialog.get("applied_routines"))
            if not prescribed:
                continue
            actions = actions_of(index)
            said = set()  # (device, param, value) stated by anyone before message k
            for k, message in enumerate(dialog["messages"]):
                if message["role"] == "user":
                    for device, params in actions[k].items():
                        for param, value in params.items():
                            if prescribed.get(device, {}).get(param) != value:
                                continue
                            item = _item(persona, index, k, message["text"], device, param, value,
                                         (device, param, value) in said)
                            if item is not None:
                                items.append(item)
                said |= {(d, p, v) for d, ps in actions[k].items() for p, v in ps.items()}
    return items


def first_value_spans(dialog, actions):
    """[(message index, start, end)]: where each setting of the session's applied routine is first
    stated with its routine value, by the user or the assistant, as a character span of that message
    (what `training.select_by: val_knowledge` scores). actions: `message_actions` of the dialogue."""
    prescribed = prescribed_settings(dialog.get("meta"), dialog.get("routines") or [], dialog.get("applied_routines"))
    if not prescribed:
        return []
    spans, said = [], set()
    for k, message in enumerate(dialog["messages"]):
        for device, params in actions[k].items():
            for param, value in params.items():
                if (device, param) in said:
                    continue
                said.add((device, param))
                if prescribed.get(device, {}).get(param) != value:
                    continue  # first stated with another value: not the routine's
                span = _value_span(message["text"], param, value)
                if span is not None:
                    spans.append((k, *span))
    return spans


def _item(persona, index, k, text, device, param, value, in_context):
    span = _value_span(text, param, value)
    if span is None:
        return None
    written = text[span[0]:span[1]]
    candidates = _candidates(device, param, written)
    answer = _answer_index(candidates, written, value, param)
    if answer is None:
        return None
    after = re.match(r"\s*[^\s]*", text[span[1]:]).group(0)
    return ClozeItem(persona, index, k, device, param, value, text[:span[0]], after, candidates, answer, in_context)


def item_sequences(tokenizer, dialog, item, prompt_cfg, retrieved=()):
    """(shared prefix ids, [candidate tail ids]): the prompt up to the cut, then each candidate followed by
    the message's next word, or by the template's end-of-turn marker where the value ends the message."""
    marker = "\u2063"  # an invisible separator that no template rewrites
    messages = build_turn_messages(dialog, item.message_index, prompt_cfg, retrieved)
    messages.append({"role": "user", "content": item.before + marker})
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    cut = rendered.index(marker)
    prefix_text = rendered[:cut]
    after = item.after or rendered[cut + 1:].rstrip()  # e.g. "<|im_end|>": the turn ends after the value
    full = candidate_token_ids(tokenizer, prefix_text, [c + after for c in item.candidates])
    shared = len(full[0])
    for ids in full[1:]:
        shared = min(shared, next((j for j, (a, b) in enumerate(zip(full[0], ids)) if a != b), min(len(ids), shared)))
    shared = min(shared, min(len(ids) for ids in full) - 1)  # every candidate keeps a token to score
    return full[0][:shared], [ids[shared:] for ids in full]


def candidate_token_ids(tokenizer, prefix_text, endings):
    """tokenizer(prefix_text + ending) for each ending, with the prefix's history tokenized once rather than
    once per candidate (101 for an integer parameter): the text is cut after its last special token (such as
    "<|im_start|>"), which no merge crosses, so head and tail tokenize apart. Checked on the first ending;
    where the cut would change a token the whole texts are tokenized."""
    def encode(texts):
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    cut = max((prefix_text.rfind(t) + len(t) for t in tokenizer.all_special_tokens if t in prefix_text), default=0)
    head, tails = encode([prefix_text[:cut]])[0], encode([prefix_text[cut:] + e for e in endings])
    if cut and head + tails[0] == encode([prefix_text + endings[0]])[0]:
        return [head + tail for tail in tails]
    return encode([prefix_text + e for e in endings])


def candidate_logprobs(model, prefix, tails, adapter=None):
    """log p(tail | prefix) for each tail, with the prefix computed once and its cache shared."""
    return shared_prefix_logprobs(model, [(prefix, tails)], adapter)[0]


@torch.no_grad()
def shared_prefix_logprobs(model, sequences, adapter=None):
    """candidate_logprobs of several (prefix, tails) of one adapter, each prefix prefilled at most once:
    a prefix that is a token prefix of a longer one (a later item of the same dialogue) is read from the
    longer one's cache, so a dialogue's history is computed once for all its items where the prompts allow.
    """
    device = next(model.parameters()).device
    names = adapter_kwargs(model, adapter)
    runner, offset = model, 0
    if adapter is not None and adapter in getattr(model, "peft_config", {}) and \
            model.peft_config[adapter].peft_type == "PREFIX_TUNING":  # its prefix sits in front of the cache
        model.set_adapter(adapter)
        runner, names, offset = model.get_base_model(), {}, model.peft_config[adapter].num_virtual_tokens
    scores = [None] * len(sequences)
    for lead in sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0])):
        if scores[lead] is not None:
            continue
        longest = sequences[lead][0]
        members = [i for i, (prefix, _) in enumerate(sequences)
                   if scores[i] is None and longest[:len(prefix)] == prefix]
        positions = sorted({len(sequences[i][0]) - 1 for i in members})
        mask, prefix = prefix_inputs(model, torch.ones((1, len(longest)), dtype=torch.long, device=device))
        out = runner(input_ids=torch.tensor([longest], device=device), attention_mask=mask, use_cache=True,
                     logits_to_keep=torch.tensor(positions, device=device), **prefix, **names)
        first = dict(zip(positions, torch.log_softmax(out.logits[0].float(), dim=-1)))
        for chunk in _token_budget_chunks(members, [sum(map(len, sequences[i][1])) for i in members]):
            items = [TailSet(offset + len(sequences[i][0]), first[len(sequences[i][0]) - 1], sequences[i][1])
                     for i in chunk]
            for i, item_scores in zip(chunk, _tail_logprobs(runner, out.cache, items, names)):
                scores[i] = item_scores
    return scores


@dataclass(frozen=True)
class TailSet:
    """One item's candidate tails after the first `length` cached positions; first: the log-probabilities of
    the token after them."""
    length: int
    first: torch.Tensor
    tails: list


TAIL_TOKENS = 2048  # tail tokens per forward: bounds the logits (scored positions x vocabulary) of one pass


def _token_budget_chunks(members, sizes, budget=TAIL_TOKENS):
    """members in runs whose sizes add up to at most `budget` (a member over it alone)."""
    chunks, total = [], budget
    for member, size in zip(members, sizes):
        if total + size > budget:
            chunks.append([])
            total = 0
        chunks[-1].append(member)
        total += size
    return chunks


def adapter_kwargs(model, adapter):
    """The forward arguments that run one row through `adapter` (None: the model as it is): an AdapterStore
    is routed here and needs none, a PEFT model gets adapter_names."""
    if adapter is None:
        return {}
    if store_of(model) is not None:
        store_of(model).route([adapter])
        return {}
    return {"adapter_names": [adapter]}


def _tail_logprobs(runner, cache, items, names):
    """Each TailSet's tails' log-probabilities after its own first `length` positions of a one-row cache, run
    through `runner` with `names` (adapter_kwargs): for a prefix-tuned model its base model, since the cache
    already holds the prefix that the PEFT model would prepend again.

    Every tail of every item goes into one row after the cache, under a tree mask: a tail's tokens see its
    item's cached positions and their own tail's earlier tokens, at the positions they would have alone. So a
    dialogue's cache is read once for all its items and all their candidates (an integer parameter has 101)
    instead of copied into a batch row for each of them (benchmarks/bench_cloze.py), and one forward serves
    them all; the scores are the same (tests/test_cloze.py)."""
    device = items[0].first.device
    tails = [tail for item in items for tail in item.tails]
    sizes = torch.tensor([len(t) for t in tails], device=device)
    owner = torch.repeat_interleave(torch.arange(len(tails), device=device), sizes)
    within = torch.cat([torch.arange(len(t), device=device) for t in tails])
    seen = torch.repeat_interleave(torch.tensor([item.length for item in items for _ in item.tails], device=device), sizes)
    ids = torch.tensor([[token for tail in tails for token in tail]], device=device)
    # the vocabulary projection runs only where a tail's next token is scored, not on each tail's last token
    scored = torch.nonzero(within[1:] > 0).flatten()
    totals = torch.cat([item.first[[tail[0] for tail in item.tails]] for item in items]).float()
    if len(scored):
        length = max(item.length for item in items)
        row = turn_cache(runner, [(cache, 0, 0)], [length])
        logits = runner(input_ids=ids, attention_mask=_tree_mask(runner, length, seen, owner, within),
                        position_ids=(seen + within)[None], cache=row, logits_to_keep=scored, **names).logits[0].float()
        token_logp = torch.log_softmax(logits, dim=-1).gather(1, ids[0, scored + 1, None])[:, 0]
        totals = totals.index_add(0, owner[scored + 1], token_logp)
    return [part.tolist() for part in totals.split([len(item.tails) for item in items])]


def _tree_mask(runner, length, seen, owner, within):
    """The 4-D attention mask (1, 1, tail tokens, length + tail tokens) of tails packed in one row: a token
    sees the first `seen` of the `length` cached positions (its item's prefix), and a tail token its own tail
    up to itself. Boolean (True: attend) for SDPA, additive (0 / the dtype's minimum) for eager attention."""
    n = owner.shape[0]
    allowed = torch.empty((n, length + n), dtype=torch.bool, device=owner.device)
    allowed[:, :length] = torch.arange(length, device=owner.device)[None, :] < seen[:, None]
    allowed[:, length:] = (owner[:, None] == owner[None, :]) & (within[:, None] >= within[None, :])
    if runner.config._attn_implementation == "eager":
        dtype = next(runner.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=owner.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)[None, None]
    return allowed[None, None]


def habit_values(dialogs, train_indices_by_persona, actions_of):
    """{persona (and EVERYONE): {(device, param): the value stated most often in that persona's (all
    personas') train dialogues}}; ties go to the value seen first."""
    counts = {}
    for persona, indices in train_indices_by_persona.items():
        for item in cloze_items(dialogs, {persona: indices}, actions_of):
            for who in (persona, EVERYONE):
                counts.setdefault(who, Counter())[(item.device, item.param, item.value)] += 1
    habits = {}
    for who, counter in counts.items():
        for (device, param, value), _ in counter.most_common():
            habits.setdefault(who, {}).setdefault((device, param), value)
    return habits


def score_items(model, tokenizer, dialogs, items, prompt_cfg, arm, adapter_of, habits, retriever=None, seed=None):
    """ClozeResults of one arm; adapter_of(persona) names each persona's adapter (None: skip it);
    habits: `habit_values` of the train split, for the majority and habit baselines."""
    majority = habits.get(EVERYONE, {})
    by_dialog = {}  # items of one dialogue and adapter share their prefill
    for item in items:
        adapter = adapter_of(item.persona_id)
        if adapter is not None:
            by_dialog.setdefault((item.dialog_index, adapter), []).append(item)
    results = []
    for (index, adapter), group in by_dialog.items():
        dialog = dialogs[index]
        sequences = []
        for item in group:
            retrieved = ()
            if prompt_cfg.retrieval:
                retrieved = retriever.retrieve_many([(item.persona_id, dialog["messages"][:item.message_index], index)])[0]
            sequences.append(item_sequences(tokenizer, dialog, item, prompt_cfg, retrieved))
        scored = shared_prefix_logprobs(model, sequences, adapter if routes_adapters(model) else None)
        results += [_result(item, scores, arm, seed, habits, majority) for item, scores in zip(group, scored)]
    return results


def _result(item, scores, arm, seed, habits, majority):
    best = max(range(len(scores)), key=scores.__getitem__)
    key = (item.device, item.param)
    habit = habits.get(item.persona_id, {}).get(key, majority.get(key))
    return ClozeResult(item.persona_id, arm, seed, item.dialog_index, item.message_index, best == item.answer,
                       1 / len(item.candidates), majority.get(key) == item.value, habit == item.value, item.in_context,
                       item.device, item.param, item.candidates[item.answer], item.candidates[best])
