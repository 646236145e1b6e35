"""The preference cloze: items where users state routine values, and candidate scoring."""

from dataclasses import replace

import pytest
import torch

from adaptcommand.evaluation.action_metrics import ActionExtractor
from adaptcommand.evaluation.cloze import (
    TailTree,
    candidate_logprobs,
    candidate_token_ids,
    cloze_items,
    dialogue_logprobs,
    habit_values,
    item_sequences,
    score_items,
    shared_prefix_logprobs,
)
from adaptcommand.evaluation.routine_knowledge import EVERYONE, message_actions
from adaptcommand.model.config import defaults
from adaptcommand.model.modeling import embedded_tokenizer

extract = ActionExtractor().extract_actions
ROUTINE = {"triggers": {"time_of_day": "evening"},
           "actions": {"lights": {"brightness": 50, "color": "warm"}, "ac": {"temperature": 21, "mode": "heat"}}}


def _dialog(*user_texts, persona="persona_000", assistant="Done."):
    messages = []
    for text in user_texts:
        messages += [{"role": "user", "text": text}, {"role": "assistant", "text": assistant}]
    return {"persona_id": persona, "session_id": 0, "meta": {"time_of_day": "evening"}, "applied_routines": [0],
            "routines": [ROUTINE], "messages": messages}


def _items(dialogs):
    def actions_of(i):
        return message_actions(dialogs[i], extract)
    return cloze_items(dialogs, {"persona_000": list(range(len(dialogs)))}, actions_of), actions_of


def test_items_are_the_stated_routine_values():
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.", "Set the AC to 22 degrees in Heat mode.")]
    items, _ = _items(dialogs)
    by_param = {(i.device, i.param): i for i in items}
    # lights 50 is the routine's; the AC's 22 is not (routine: 21), its heat mode is
    assert set(by_param) == {("lights", "brightness"), ("ac", "mode")}
    bright = by_param[("lights", "brightness")]
    assert (bright.message_index, bright.before, bright.after) == (2, "Make it ", "%")
    assert len(bright.candidates) == 101 and bright.candidates[bright.answer] == "50"
    mode = by_param[("ac", "mode")]
    assert mode.after == " mode." and not mode.in_context
    # every candidate written the same way (the schema's), the answer too, whatever case the user wrote
    assert mode.candidates == ("cool", "heat", "auto") and mode.answer == 1


def test_candidates_carry_no_surface_cue():
    dialogs = [{**_dialog("Switch the TV to Netflix please."),
                "routines": [{"triggers": {}, "actions": {"tv": {"input_source": "Netflix"}}}]}]
    item = _items(dialogs)[0][0]
    assert item.candidates == ("HDMI1", "HDMI2", "AV", "Netflix", "YouTube") and item.answer == 3
    lowered = [{**dialogs[0], "messages": [{"role": "user", "text": "switch the tv to netflix please."},
                                           {"role": "assistant", "text": "Done."}]}]
    assert _items(lowered)[0][0].candidates == item.candidates  # the user's casing changes nothing


def test_values_the_dialogue_already_stated_are_set_apart():
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.", assistant="Lights at 50%, warm color?"),
               _dialog("Turn on the lights.", "Make it 50% please.")]
    items, _ = _items(dialogs)
    by_dialog = {(i.dialog_index, i.param): i.in_context for i in items}
    # dialogue 0: the assistant said 50% before the user did; dialogue 1: nobody had
    assert by_dialog[(0, "brightness")] is True and by_dialog[(1, "brightness")] is False


def test_spontaneous_sessions_give_no_items():
    items, _ = _items([{**_dialog("Set the lights to 50%."), "applied_routines": None}])
    assert items == []


def test_habit_and_majority_values_over_train_dialogues():
    thirty = {"routines": [{**ROUTINE, "actions": {"lights": {"brightness": 30}}}]}
    dialogs = [_dialog("Lights to 50% please."), _dialog("Lights to 50% please."),
               {**_dialog("Lights to 30% please.", persona="b"), **thirty},
               {**_dialog("Lights to 30% please.", persona="b"), **thirty}, _dialog("Lights to 50% please.", persona="b")]
    _, actions_of = _items(dialogs)
    habits = habit_values(dialogs, {"persona_000": [0, 1], "b": [2, 3, 4]}, actions_of)
    assert habits[EVERYONE] == {("lights", "brightness"): 50}  # three times against twice
    assert habits["persona_000"] == {("lights", "brightness"): 50} and habits["b"] == {("lights", "brightness"): 30}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])  # the packed candidates' mask has a form for each
def test_cached_candidate_scores_equal_full_sequence_scores(tiny_arch_dir, attention):
    from peft import LoraConfig, get_peft_model

    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    model.set_attn_implementation(attention)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                           adapter_name="p1").eval()
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.")]
    item = _items(dialogs)[0][0]
    prefix, tails = item_sequences(tokenizer, dialogs[0], item, replace(defaults().prompt, system_template="S"))
    assert len(tails) == 101 and all(len(t) >= 1 for t in tails)
    for adapter in ("p1", "__base__"):
        cached = candidate_logprobs(model, prefix, tails, adapter)
        for k in (0, 50, 100):
            ids = torch.tensor([prefix + tails[k]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids, adapter_names=[adapter]).logits[0].float(), dim=-1)
            full = sum(float(logp[len(prefix) + j - 1, tok]) for j, tok in enumerate(tails[k]))
            assert cached[k] == pytest.approx(full, abs=1e-3)
    # the adapter changes the scores, so arms are told apart
    assert candidate_logprobs(model, prefix, tails, "p1") != \
        candidate_logprobs(model, prefix, tails, "__base__")


def test_items_of_one_dialogue_share_one_prefill(tiny_arch_dir):
    """Scores from a shared prefill equal each item scored alone (on the base and through an adapter),
    and a dialogue whose items extend each other is prefilled once."""
    from peft import LoraConfig, get_peft_model

    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                           adapter_name="p1").eval()
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.", "And a warm color.", "Heat mode for the AC.")]
    items, _ = _items(dialogs)
    cfg = replace(defaults().prompt, system_template="S")
    sequences = [item_sequences(tokenizer, dialogs[0], item, cfg) for item in items]
    assert len(items) == 3 and all(a[0] == b[0][:len(a[0])] for a, b in zip(sequences, sequences[1:]))
    prefills, tail_passes = [], []
    hook = model.get_base_model().register_forward_pre_hook(
        lambda module, args, kwargs: (prefills if kwargs.get("cache") is None else tail_passes).append(
            kwargs["input_ids"].shape), with_kwargs=True)
    for adapter in ("p1", "__base__"):
        prefills.clear()
        tail_passes.clear()
        shared = shared_prefix_logprobs(model, sequences, adapter)
        assert prefills == [(1, len(sequences[-1][0]))]  # the longest prefix, once
        # every candidate of every item in one pass: a row per item, as wide as the largest item's token trie
        assert tail_passes == [(len(items), max(len(TailTree.of(tails).tokens) for _, tails in sequences))]
        for (prefix, tails), scores in zip(sequences, shared):
            assert scores == pytest.approx(candidate_logprobs(model, prefix, tails, adapter),
                                           abs=1e-4)
    hook.remove()


def test_dialogues_of_several_adapters_scored_together_equal_each_alone(tiny_arch_dir):
    """Prefixes of several dialogues and adapters go through one prefill pass (each row its own adapter) and
    their tails through shared passes; every score equals its dialogue scored on its own."""
    from peft import LoraConfig, get_peft_model

    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                           adapter_name="p1").eval()
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.", "And a warm color."),
               _dialog("Heat mode for the AC.", "Lights at 50% please.")]
    cfg = replace(defaults().prompt, system_template="S")
    sequences = [[item_sequences(tokenizer, dialog, item, cfg) for item in _items([dialog])[0]] for dialog in dialogs]
    groups = [("p1", sequences[0]), ("__base__", sequences[1]), ("p1", sequences[1])]
    prefills = []
    hook = model.get_base_model().register_forward_pre_hook(
        lambda module, args, kwargs: prefills.append(kwargs["input_ids"].shape) if kwargs.get("cache") is None
        else None, with_kwargs=True)
    together = dialogue_logprobs(model, groups)
    hook.remove()
    assert len(prefills) == 1 and prefills[0][0] == 3  # one pass, a row per dialogue and adapter
    for (adapter, group), scores in zip(groups, together):
        assert len(scores) == len(group) > 0
        for got, alone in zip(scores, shared_prefix_logprobs(model, group, adapter)):
            assert got == pytest.approx(alone, abs=1e-4)
    assert together[1] != together[2]  # the same dialogue through another adapter scores differently


def test_candidates_sharing_leading_tokens_share_trie_nodes():
    tails = [[7, 1, 9], [7, 2, 9], [8, 9], [7, 1, 5]]
    tree = TailTree.of(tails)
    assert len(tree.tokens) == 8  # 7, 7-1, 7-1-9, 7-2, 7-2-9, 8, 8-9, 7-1-5: against 11 tail tokens
    for tail, path in zip(tails, tree.paths):
        assert [tree.tokens[k] for k in path] == tail and [tree.depth[k] for k in path] == list(range(len(tail)))
        assert tree.parent[path[0]] == -1 and all(tree.parent[child] == parent for parent, child in zip(path, path[1:]))
    seen = tree.ancestry()
    last = tree.paths[0][-1]  # 9 after 7-1 sees 7, 1 and itself, not 2 or the other 9s
    assert sorted(seen[last].nonzero().flatten().tolist()) == sorted(tree.paths[0])


def test_score_items_marks_the_argmax(tiny_model):
    model, tokenizer = tiny_model
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.", "And a warm color.")]
    items, _ = _items(dialogs)
    cfg = replace(defaults().prompt, system_template="S")
    habits = {EVERYONE: {("lights", "brightness"): 50, ("lights", "color"): "cool"},
              "persona_000": {("lights", "color"): "warm"}}  # no brightness habit: the population's stands in
    results = score_items(model, tokenizer, dialogs, items, cfg, "baseline", lambda p: "__base__", habits)
    assert [(r.arm, r.majority_correct, r.habit_correct) for r in results] == [("baseline", True, True),
                                                                               ("baseline", False, True)]
    assert results[0].chance == pytest.approx(1 / 101) and results[1].chance == pytest.approx(1 / 3)
    for item, result in zip(items, results):
        prefix, tails = item_sequences(tokenizer, dialogs[0], item, cfg)
        scores = candidate_logprobs(model, prefix, tails)
        assert result.correct == (max(range(len(scores)), key=scores.__getitem__) == item.answer)
    assert score_items(model, tokenizer, dialogs, items, cfg, "lora_per_user", lambda p: None, {}) == []


def test_arms_with_one_prompt_render_each_item_once(tiny_model, monkeypatch):
    import adaptcommand.evaluation.cloze as cloze

    model, tokenizer = tiny_model
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.", "And a warm color.")]
    items, _ = _items(dialogs)
    cfg = replace(defaults().prompt, system_template="S")
    arms = (("baseline", cfg), ("lora_all", cfg), ("character", replace(cfg, system_template="T")))
    alone = [score_items(model, tokenizer, dialogs, items, c, arm, lambda p: "__base__", {}) for arm, c in arms]
    rendered = []
    monkeypatch.setattr(cloze, "item_sequences", lambda *args: rendered.append(args[2]) or item_sequences(*args))
    shared = {}
    together = [score_items(model, tokenizer, dialogs, items, c, arm, lambda p: "__base__", {}, sequences=shared)
                for arm, c in arms]
    assert together == alone
    assert rendered == items + items  # once for the two arms of one prompt, once more for the other prompt


def test_no_candidate_wins_by_being_a_prefix(tiny_model):
    """Where the value ends the message, every candidate ends with the end-of-turn marker, so no tail is a
    token prefix of another ("3" of "35") and a two-digit answer can rank first."""
    _, tokenizer = tiny_model
    dialogs = [{**_dialog("Set the lights to 35"), "routines": [{**ROUTINE, "actions": {"lights": {"brightness": 35}}}]}]
    item = _items(dialogs)[0][0]
    assert item.after == "" and item.candidates[item.answer] == "35"
    prefix, tails = item_sequences(tokenizer, dialogs[0], item, replace(defaults().prompt, system_template="S"))
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert all(t[-1] == end_of_turn for t in tails)
    for a in tails:
        for b in tails:
            assert a is b or a != b[: len(a)], (tokenizer.decode(a), tokenizer.decode(b))


def test_candidate_tokens_equal_whole_text_tokens():
    """The history is tokenized once and the candidates after it: the ids are those of each whole text, also
    where a candidate would merge with the text before it."""
    tiny_tokenizer = embedded_tokenizer()
    messages = [{"role": "system", "content": "You help at home."}, {"role": "user", "content": "Set the heat to"}]
    prefix = tiny_tokenizer.apply_chat_template(messages, tokenize=False).rsplit("<|im_end|>", 1)[0]
    endings = [" 21 degrees", "21", "0<|im_end|>", "-5 now", "cool and dim"]
    whole = [tiny_tokenizer(prefix + e, add_special_tokens=False)["input_ids"] for e in endings]
    assert candidate_token_ids(tiny_tokenizer, prefix, endings) == whole
    assert candidate_token_ids(tiny_tokenizer, "no special token here:", endings) == \
        [tiny_tokenizer("no special token here:" + e, add_special_tokens=False)["input_ids"] for e in endings]
