"""The preference cloze: items where users state routine values, and candidate scoring."""

import pytest
import torch

from scripts.action_metrics import ActionExtractor
from scripts.cloze import candidate_logprobs, cloze_items, item_sequences, majority_values, score_items
from scripts.config import defaults
from scripts.routine_knowledge import message_actions

extract = ActionExtractor().extract_actions
ROUTINE = {"triggers": {"time_of_day": "evening"},
           "actions": {"lights": {"brightness": 50, "color": "warm"}, "ac": {"temperature": 21, "mode": "heat"}}}


def _dialog(*user_texts, persona="persona_000"):
    messages = []
    for text in user_texts:
        messages += [{"role": "user", "text": text}, {"role": "assistant", "text": "Done."}]
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
    assert mode.candidates == ("Cool", "Heat", "Auto") and mode.answer == 1 and mode.after == " mode."


def test_spontaneous_sessions_give_no_items():
    items, _ = _items([{**_dialog("Set the lights to 50%."), "applied_routines": None}])
    assert items == []


def test_majority_value_over_train_dialogues():
    dialogs = [_dialog("Lights to 50% please."), _dialog("Lights to 50% please."),
               {**_dialog("Lights to 30% please."), "routines": [{**ROUTINE, "actions": {"lights": {"brightness": 30}}}]}]
    _, actions_of = _items(dialogs)
    assert majority_values(dialogs, [0, 1, 2], actions_of) == {("lights", "brightness"): 50}


def test_cached_candidate_scores_equal_full_sequence_scores(tiny_arch_dir):
    from peft import LoraConfig, get_peft_model

    from scripts.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                           adapter_name="p1").eval()
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.")]
    item = _items(dialogs)[0][0]
    prefix, tails = item_sequences(tokenizer, dialogs[0], item, {**defaults()["prompt"], "system_template": "S"})
    assert len(tails) == 101 and all(len(t) >= 1 for t in tails)
    for adapter in ("p1", "__base__"):
        cached = candidate_logprobs(model, prefix, tails, tokenizer.pad_token_id, adapter)
        for k in (0, 50, 100):
            ids = torch.tensor([prefix + tails[k]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids, adapter_names=[adapter]).logits[0].float(), dim=-1)
            full = sum(float(logp[len(prefix) + j - 1, tok]) for j, tok in enumerate(tails[k]))
            assert cached[k] == pytest.approx(full, abs=1e-3)
    # the adapter changes the scores, so arms are told apart
    assert candidate_logprobs(model, prefix, tails, tokenizer.pad_token_id, "p1") != \
        candidate_logprobs(model, prefix, tails, tokenizer.pad_token_id, "__base__")


def test_score_items_marks_the_argmax(tiny_model):
    model, tokenizer = tiny_model
    dialogs = [_dialog("Turn on the lights.", "Make it 50% please.", "And a warm color.")]
    items, _ = _items(dialogs)
    cfg = {**defaults()["prompt"], "system_template": "S"}
    results = score_items(model, tokenizer, dialogs, items, cfg, "baseline", lambda p: "__base__",
                          {("lights", "brightness"): 50, ("lights", "color"): "cool"})
    assert [(r.arm, r.majority_correct) for r in results] == [("baseline", True), ("baseline", False)]
    assert results[0].chance == pytest.approx(1 / 101) and results[1].chance == pytest.approx(1 / 3)
    for item, result in zip(items, results):
        prefix, tails = item_sequences(tokenizer, dialogs[0], item, cfg)
        scores = candidate_logprobs(model, prefix, tails, tokenizer.pad_token_id)
        assert result.correct == (max(range(len(scores)), key=scores.__getitem__) == item.answer)
    assert score_items(model, tokenizer, dialogs, items, cfg, "lora_per_user", lambda p: None, {}) == []
