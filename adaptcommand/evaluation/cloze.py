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

No generation: one forward pass over the prefix and one over all the candidates, each item's
candidates a token trie in one batch row after its KV cache; the items of one dialogue share one
prefill where their prompts extend each other. So it is cheap on a CPU, and it measures knowledge
even where replies ask back.
Beside each persona's top-1 accuracy, on exactly the same items: chance (the mean of 1 / candidates),
always answering the most common value of that parameter in every user's train dialogues
(majority), and always answering this user's own most common train value (habit; the population's
where the user never stated that parameter in train).
"""

import re
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from adaptcommand.data.schema import DEVICES
from adaptcommand.evaluation.action_metrics import prescribed_settings
from adaptcommand.evaluation.routine_knowledge import EVERYONE
from adaptcommand.model.adapters import prefix_inputs
from adaptcommand.model.generation import right_padded_batch, turn_cache
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


def shared_prefix_logprobs(model, sequences, adapter=None):
    """candidate_logprobs of several (prefix, tails) of one adapter, each prefix prefilled at most once."""
    return dialogue_logprobs(model, [(adapter, sequences)])[0]


@dataclass(frozen=True)
class Lead:
    """A prefix prefilled for itself and for the items whose prefixes are token prefixes of it (earlier items of
    the same dialogue): group and sequence indices into dialogue_logprobs' groups."""
    group: int
    adapter: object
    ids: list
    members: list  # sequence indices within the group

    def ends(self, sequences):
        """The positions of the members' last prefix tokens (where their first candidate token is scored)."""
        return sorted({len(sequences[i][0]) - 1 for i in self.members})


PREFILL_TOKENS = 8192  # padded prefix tokens (rows x longest row) per prefill pass


@torch.no_grad()
def dialogue_logprobs(model, groups):
    """candidate_logprobs of every item of groups [(adapter, [(prefix ids, [tail ids])])], usually one group per
    dialogue and adapter: within a group a prefix that is a token prefix of a longer one (a later item of the
    same dialogue) is read from the longer one's cache, so a dialogue's history is computed once for all its
    items where the prompts allow. Across groups the prefixes are prefilled together, right-padded (a causal
    mask alone then hides the pads), and the tails of many dialogues share a pass, each batch row through its
    own adapter (a prefix-tuned model runs one adapter at a time). Returns [[scores per candidate] per item]
    per group."""
    leads = [lead for g, (adapter, sequences) in enumerate(groups) for lead in _leads(g, adapter, sequences)]
    scores = [[None] * len(sequences) for _, sequences in groups]
    tuned = getattr(model, "peft_config", {})
    prefix_tuned = {a for a, c in tuned.items() if c.peft_type == "PREFIX_TUNING"} if tuned else set()
    runs = [[lead for lead in leads if lead.adapter == a] for a in dict.fromkeys(lead.adapter for lead in leads)] \
        if prefix_tuned else [leads] if leads else []
    for run in runs:
        runner, offset, route = model, 0, lambda adapters: adapter_kwargs(model, adapters)
        if run[0].adapter in prefix_tuned:  # its prefix sits in front of the cache; the base model reads it
            model.set_adapter(run[0].adapter)
            runner, offset, route = model.get_base_model(), tuned[run[0].adapter].num_virtual_tokens, lambda _: {}
        run = sorted(run, key=lambda lead: -len(lead.ids))
        for chunk in _token_budget_chunks(run, [len(lead.ids) for lead in run], PREFILL_TOKENS):
            cache, first = _prefill(model, runner, chunk, [lead.ends(groups[lead.group][1]) for lead in chunk], route)
            items = []
            for row, lead in enumerate(chunk):
                for i in lead.members:
                    prefix, tails = groups[lead.group][1][i]
                    items.append(TailSet(lead.group, i, row, offset + len(prefix), first[row, len(prefix) - 1], tails,
                                         TailTree.of(tails), lead.adapter))
            items.sort(key=lambda item: -len(item.tree.tokens))  # rows of like width share a pass
            for part in _token_budget_chunks(items, [len(item.tree.tokens) for item in items]):
                for item, item_scores in zip(part, _tail_logprobs(runner, cache, part, route)):
                    scores[item.group][item.index] = item_scores
    return scores


def _leads(group, adapter, sequences):
    """The Leads of one group's sequences: the longest prefix first, with every shorter one it extends."""
    leads, taken = [], set()
    for lead in sorted(range(len(sequences)), key=lambda i: -len(sequences[i][0])):
        if lead in taken:
            continue
        longest = sequences[lead][0]
        members = [i for i, (prefix, _) in enumerate(sequences) if i not in taken and longest[:len(prefix)] == prefix]
        taken.update(members)
        leads.append(Lead(group, adapter, longest, members))
    return leads


def _prefill(model, runner, leads, positions, route):
    """(cache, {(row, position): log-probabilities of the next token}) of the leads' prefixes, right-padded in one
    batch, the vocabulary projected only at each row's `positions` (its members' last prefix tokens)."""
    ids, mask = right_padded_batch([lead.ids for lead in leads], 0, next(model.parameters()).device)
    full_mask, prefix = prefix_inputs(model, mask)
    pairs = [(row, position) for row, kept in enumerate(positions) for position in kept]
    with _projecting_only(runner, pairs):
        out = runner(input_ids=ids, attention_mask=full_mask if prefix else None, use_cache=True, logits_to_keep=0,
                     **prefix, **route([lead.adapter for lead in leads]))
    return out.cache, dict(zip(pairs, torch.log_softmax(out.logits.float(), dim=-1)))


@contextmanager
def _projecting_only(runner, pairs):
    """Within it, `runner`'s vocabulary projection sees only the hidden states at (row, position) `pairs`: its
    logits come back as (pairs, vocabulary) instead of (rows, positions, vocabulary)."""
    rows, positions = torch.tensor(pairs, device=next(runner.parameters()).device).reshape(-1, 2).T
    hook = runner.get_output_embeddings().register_forward_pre_hook(lambda module, args: (args[0][rows, positions],))
    try:
        yield
    finally:
        hook.remove()


@dataclass(frozen=True)
class TailSet:
    """Item `index` of group `group`: its candidate tails after the first `length` positions of cache row `row`;
    first: the log-probabilities of the token after them; adapter: the adapter its row runs through."""
    group: int
    index: int
    row: int
    length: int
    first: torch.Tensor
    tails: list
    tree: "TailTree"
    adapter: object = None


@dataclass(frozen=True)
class TailTree:
    """An item's candidate tails as a token trie: candidates sharing their first tokens share those nodes
    (an integer parameter's 101 candidates share their leading digits), so each shared token is run and
    projected onto the vocabulary once. Node k is `tokens[k]` at `depth[k]` under node `parent[k]` (-1: a
    first token); `paths[c]` lists candidate c's nodes in order."""
    tokens: list
    parent: list
    depth: list
    paths: list

    @classmethod
    def of(cls, tails):
        node_of, tokens, parent, depth = {}, [], [], []
        for tail in tails:
            for j in range(len(tail)):
                key = tuple(tail[:j + 1])
                if key not in node_of:
                    node_of[key] = len(tokens)
                    tokens.append(tail[j])
                    parent.append(node_of[key[:-1]] if j else -1)
                    depth.append(j)
        return cls(tokens, parent, depth, [[node_of[tuple(tail[:j + 1])] for j in range(len(tail))] for tail in tails])

    def ancestry(self):
        """(nodes, nodes) boolean: node i sees node j where j is i or one of its ancestors."""
        seen = torch.eye(len(self.tokens), dtype=torch.bool)
        for k, parent in enumerate(self.parent):
            while parent >= 0:
                seen[k, parent] = True
                parent = self.parent[parent]
        return seen


TAIL_TOKENS = 2048  # padded tail tokens (rows x longest row) per forward: bounds one pass's activations


def _token_budget_chunks(members, sizes, budget=TAIL_TOKENS):
    """members in runs whose padded size (count x largest size) stays within `budget` (a member over it alone)."""
    chunks, largest = [], 0
    for member, size in zip(members, sizes):
        if not chunks or (len(chunks[-1]) + 1) * max(largest, size) > budget:
            chunks.append([])
            largest = 0
        chunks[-1].append(member)
        largest = max(largest, size)
    return chunks


def adapter_kwargs(model, adapters):
    """The forward arguments that run each row through its adapter (adapters: one per row; None: the model as it
    is): an AdapterStore is routed here and needs none, a PEFT model gets adapter_names."""
    if adapters[0] is None:
        return {}
    if store_of(model) is not None:
        store_of(model).route(adapters)
        return {}
    return {"adapter_names": list(adapters)}


def _tail_logprobs(runner, cache, items, route):
    """Each TailSet's tails' log-probabilities after its own first `length` positions of its cache row, run
    through `runner` with each row's adapter (route(adapters): adapter_kwargs): for a prefix-tuned model its
    base model, since the cache already holds the prefix that the PEFT model would prepend again.

    One batch row per item: its prefix's cached positions (left-padded to the longest item's) and then its
    candidates as a token trie (TailTree), under a mask that lets a node see its item's prefix and its own
    ancestors, at the positions it would have alone. So an item's candidates (an integer parameter has 101)
    read its prefix once instead of a cache copy each, shared leading tokens run once, and no token attends
    over another item's tails; the scores equal each candidate scored on its own (tests/test_cloze.py)."""
    device = items[0].first.device
    width = max(len(item.tree.tokens) for item in items)
    length = max(item.length for item in items)
    ids = torch.zeros((len(items), width), dtype=torch.long, device=device)
    positions = torch.zeros_like(ids)
    allowed = torch.zeros((len(items), width, length + width), dtype=torch.bool, device=device)
    allowed[:, range(width), range(length, length + width)] = True  # a pad sees itself: no row is all masked
    for row, item in enumerate(items):
        tree, pad = item.tree, width - len(item.tree.tokens)  # the tree sits at the row's end
        ids[row, pad:] = torch.tensor(tree.tokens, device=device)
        positions[row, pad:] = item.length + torch.tensor(tree.depth, device=device)
        allowed[row, pad:, length - item.length:length] = True
        allowed[row, pad:, length + pad:] = tree.ancestry().to(device)
    # every scored token: the node it follows (a (row, position) pair, each projected once), the token and
    # the candidate it belongs to
    pair_of, pairs, targets, owner, firsts = {}, [], [], [], []
    for row, item in enumerate(items):
        for tail, path in zip(item.tails, item.tree.paths):
            firsts.append(item.first[tail[0]])
            for node, token in zip(path[:-1], tail[1:]):
                pairs.append(pair_of.setdefault((row, width - len(item.tree.tokens) + node), len(pair_of)))
                targets.append(token)
                owner.append(len(firsts) - 1)
    totals = torch.stack(firsts).float()
    if pair_of:
        with _projecting_only(runner, list(pair_of)):
            logits = runner(input_ids=ids, attention_mask=_attention_mask(runner, allowed), position_ids=positions,
                            cache=turn_cache(runner, cache, [item.row for item in items],
                                             [item.length for item in items]),
                            logits_to_keep=0, **route([item.adapter for item in items])).logits
        logp = torch.log_softmax(logits.float(), dim=-1)  # (scored nodes, vocabulary)
        token_logp = logp[torch.tensor(pairs, device=device), torch.tensor(targets, device=device)]
        totals = totals.index_add(0, torch.tensor(owner, device=device), token_logp)
    return [part.tolist() for part in totals.split([len(item.tails) for item in items])]


def _attention_mask(runner, allowed):
    """The 4-D attention mask of boolean `allowed` (rows, queries, keys): boolean (True: attend) for SDPA,
    additive (0 / the dtype's minimum) for eager attention."""
    if runner.config._attn_implementation == "eager":
        dtype = next(runner.parameters()).dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)[:, None]
    return allowed[:, None]


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


def score_items(model, tokenizer, dialogs, items, prompt_cfg, arm, adapter_of, habits, retriever=None, seed=None,
                sequences=None):
    """ClozeResults of one arm; adapter_of(persona) names each persona's adapter (None: skip it);
    habits: `habit_values` of the train split, for the majority and habit baselines.

    sequences: a dict the caller keeps over the arms and seeds it scores, of each item's token ids under a
    prompt (`item_sequences`): arms and seeds with the same prompt settings and tokenizer (the same folder,
    whichever model group loaded it) render and tokenize an item once."""
    sequences = {} if sequences is None else sequences
    majority = habits.get(EVERYONE, {})
    by_dialog = {}  # items of one dialogue and adapter share their prefill
    for item in items:
        adapter = adapter_of(item.persona_id)
        if adapter is not None:
            by_dialog.setdefault((item.dialog_index, adapter), []).append(item)
    retrieved = {}  # every item's retrieved dialogues, in one embedding call
    if prompt_cfg.retrieval:
        asked = [item for group in by_dialog.values() for item in group]
        found = retriever.retrieve_many([(item.persona_id, dialogs[item.dialog_index]["messages"][:item.message_index],
                                          item.dialog_index) for item in asked])
        retrieved = {id(item): dialogues for item, dialogues in zip(asked, found)}

    def sequences_of(item):
        found = retrieved.get(id(item), ())
        key = (tokenizer.name_or_path, item, prompt_cfg, tuple(map(id, found)))
        if key not in sequences:
            sequences[key] = item_sequences(tokenizer, dialogs[item.dialog_index], item, prompt_cfg, found)
        return sequences[key]

    routed = routes_adapters(model)
    scored = dialogue_logprobs(model, [(adapter if routed else None, [sequences_of(item) for item in group])
                                       for (_, adapter), group in by_dialog.items()])
    return [_result(item, scores, arm, seed, habits, majority)
            for group, group_scores in zip(by_dialog.values(), scored) for item, scores in zip(group, group_scores)]


def _result(item, scores, arm, seed, habits, majority):
    best = max(range(len(scores)), key=scores.__getitem__)
    key = (item.device, item.param)
    habit = habits.get(item.persona_id, {}).get(key, majority.get(key))
    return ClozeResult(item.persona_id, arm, seed, item.dialog_index, item.message_index, best == item.answer,
                       1 / len(item.candidates), majority.get(key) == item.value, habit == item.value, item.in_context,
                       item.device, item.param, item.candidates[item.answer], item.candidates[best])
