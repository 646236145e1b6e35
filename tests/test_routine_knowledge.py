"""Routine knowledge (the primary metric) and the reference policies that bound it."""

import itertools
import tempfile

import pytest
from conftest import BagOfWordsEmbedder, write_raw

from scripts.action_metrics import ActionExtractor
from scripts.cleaning import clean
from scripts.config import POLICY_ARMS
from scripts.demo_data import generate
from scripts.evaluation import TurnScorer, aggregate_per_persona, collect_turns
from scripts.routine_knowledge import (EVERYONE, describe_settings, knowledge_metrics, message_actions, policy_reply,
                                       session_settings, turn_knowledge, usual_settings)
from scripts.schema import DEVICES
from scripts.splits import make_splits

extract = ActionExtractor().extract_actions
ROUTINE = {"triggers": {"time_of_day": "evening"},
           "actions": {"lights": {"brightness": 50, "color": "warm"}, "ac": {"temperature": 21}, "tv": None}}
DIALOG = {"persona_id": "persona_000", "session_id": 4, "meta": {"time_of_day": "evening"}, "applied_routines": [0],
          "routines": [ROUTINE],
          "messages": [{"role": "user", "text": "Turn on the lights."}, {"role": "assistant", "text": "What brightness?"},
                       {"role": "user", "text": "50%."}, {"role": "assistant", "text": "Lights at 50%."},
                       {"role": "user", "text": "And the AC to 22 degrees."}, {"role": "assistant", "text": "AC at 22."}]}


def test_settings_open_until_the_user_states_them():
    settings = {s.key: s for s in session_settings(DIALOG, message_actions(DIALOG, extract))}
    # brightness: the user says 50% at message 2 -> open at assistant turn 1 only
    assert settings["lights.brightness"].open_turns == (1,) and settings["lights.brightness"].value == 50
    # colour: never stated -> open at every assistant turn
    assert settings["lights.color"].open_turns == (1, 3, 5)
    # AC temperature: first talked about in the message that states it -> never testable; TV: never talked about
    assert set(settings) == {"lights.brightness", "lights.color"}


def test_spontaneous_session_has_no_settings():
    spontaneous = {**DIALOG, "applied_routines": None}
    assert session_settings(spontaneous, message_actions(spontaneous, extract)) == []


def test_hits_wrongs_and_f1_by_hand():
    settings = session_settings(DIALOG, message_actions(DIALOG, extract))
    replies = {1: {"lights": {"brightness": 50, "color": "cool"}},  # brightness hit, colour wrong
               3: {"lights": {"brightness": 40}},                    # brightness closed by then: not counted
               5: {"lights": {"color": "warm"}}}                     # colour hit
    records = [{"dialog_index": 0, "knowledge": turn_knowledge(settings, t, a)} for t, a in replies.items()]
    assert records[0]["knowledge"]["routine_hits"] == ["lights.brightness"]
    assert records[0]["knowledge"]["routine_wrongs"] == ["lights.color"]
    assert records[1]["knowledge"]["routine_hits"] == records[1]["knowledge"]["routine_wrongs"] == []
    m = knowledge_metrics(records)
    # 2 settings, 2 hit, 1 also wrong: recall 1, precision 2/3, F1 = 2*2 / (2 + 2 + 1)
    assert (m["routine_settings"], m["routine_recall"]) == (2, 1.0)
    assert m["routine_precision"] == pytest.approx(2 / 3) and m["routine_f1"] == pytest.approx(0.8)
    silent = knowledge_metrics([{"dialog_index": 0, "knowledge": turn_knowledge(settings, t, {})} for t in (1, 3, 5)])
    assert silent["routine_f1"] == 0.0 and silent["routine_precision"] is None


def test_described_settings_read_back_exactly():
    """The oracle's wording round-trips through the extractor for every value of the schema."""
    for device, params in DEVICES.items():
        options = {p: ([True, False] if spec[0] == "bool" else spec[1] if spec[0] == "cat"
                       else sorted({spec[1], spec[2], (spec[1] + spec[2]) // 2, spec[1] + 1}))
                   for p, spec in params.items()}
        for values in itertools.zip_longest(*options.values()):
            settings = {p: v if v is not None else options[p][0] for p, v in zip(options, values)}
            text = describe_settings({device: settings})
            assert extract(text) == {device: settings}, text
    assert describe_settings({}) == "Okay."


def test_policy_replies():
    actions = message_actions(DIALOG, extract)
    assert policy_reply("silent", DIALOG, 3, actions) == "Okay."
    assert policy_reply("echo", DIALOG, 3, actions) == "50%."
    # turn 3: only the lights have been talked about (the AC comes up at message 4)
    assert extract(policy_reply("oracle", DIALOG, 3, actions)) == {"lights": {"brightness": 50, "color": "warm"}}
    assert extract(policy_reply("oracle", DIALOG, 5, actions)) == {"lights": {"brightness": 50, "color": "warm"},
                                                                    "ac": {"temperature": 21}}


@pytest.fixture(scope="module")
def policy_scores():
    """Per policy, per-persona metrics on the demo test split (20 personas, as the issue measured)."""
    dialogs, _, _ = clean_rows(generate(20, 20, seed=11))
    splits = make_splits(dialogs)
    turns = collect_turns(dialogs, {p: s["test"] for p, s in splits.items()})
    scorer = TurnScorer(BagOfWordsEmbedder())
    usual = usual_settings(dialogs, {p: s["train"] for p, s in splits.items()})
    out = {}
    for arm in POLICY_ARMS:
        replies = [policy_reply(arm, dialogs[t["dialog_index"]], t["turn_index"],
                                scorer.dialog_state(dialogs, t["dialog_index"])[0], usual) for t in turns]
        per_persona = aggregate_per_persona(scorer.score(dialogs, turns, replies))
        out[arm] = {k: sum(m[k] for m in per_persona.values()) / len(per_persona) for k in ("routine_f1", "param_f1")}
    return out


def clean_rows(rows):
    with tempfile.TemporaryDirectory() as folder:
        return clean(write_raw(folder, *rows))


def test_silence_and_echo_score_nothing_and_memory_scores_high(policy_scores):
    assert policy_scores["silent"]["routine_f1"] == 0.0
    assert policy_scores["echo"]["routine_f1"] <= 0.05
    assert policy_scores["oracle"]["routine_f1"] >= 0.9


def test_habit_memory_sits_between_the_population_and_perfect_memory(policy_scores):
    """The user's own habits beat everyone's habits, and both fall short of knowing the session's routine."""
    user, everyone = policy_scores["user_usual"]["routine_f1"], policy_scores["everyone_usual"]["routine_f1"]
    assert 0.05 < everyone < user < policy_scores["oracle"]["routine_f1"]


def test_usual_settings_take_the_most_frequent_value_per_user_and_overall():
    def session(persona, temperature, applied=True):
        routine = {"triggers": {}, "actions": {"ac": {"temperature": temperature}, "lights": None}}
        return {"persona_id": persona, "meta": {}, "routines": [routine], "applied_routines": [0] if applied else None,
                "messages": []}
    dialogs = [session("a", 20), session("a", 20), session("a", 25), session("b", 25), session("b", 25),
               session("b", 22), session("a", 30, applied=False), session("b", 18)]
    usual = usual_settings(dialogs, {"a": [0, 1, 2, 6], "b": [3, 4, 5]})  # index 7 is not in train
    assert usual["a"] == {"ac": {"temperature": 20}} and usual["b"] == {"ac": {"temperature": 25}}
    assert usual[EVERYONE] == {"ac": {"temperature": 25}}  # 25 three times, 20 twice
    actions = [{"ac": {}}]
    assert extract(policy_reply("user_usual", dialogs[0], 0, actions, usual)) == {"ac": {"temperature": 20}}
    assert extract(policy_reply("everyone_usual", dialogs[0], 0, actions, usual)) == {"ac": {"temperature": 25}}
    assert policy_reply("user_usual", dialogs[0], 0, [{}], usual) == "Okay."  # no device talked about yet


def test_parameter_f1_still_rewards_the_echo(policy_scores):
    """The two metrics measure different things: copying the user wins on the reference-matching one."""
    assert policy_scores["echo"]["param_f1"] >= 0.6
    assert policy_scores["echo"]["param_f1"] > 10 * max(policy_scores["echo"]["routine_f1"], 0.01)
    assert policy_scores["silent"]["param_f1"] == 0.0
