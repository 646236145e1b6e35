"""Routine knowledge (the primary metric) and the reference policies that bound it."""

import itertools
import random
import tempfile
from collections import Counter

import pytest
from conftest import BagOfWordsEmbedder, write_raw

from adaptcommand.data.cleaning import clean
from adaptcommand.data.demo_data import WordingOptions, generate
from adaptcommand.data.schema import DEVICES
from adaptcommand.data.splits import make_splits
from adaptcommand.evaluation.action_metrics import ActionExtractor, prescribed_settings
from adaptcommand.evaluation.evaluation import TurnScorer, aggregate_per_persona, collect_turns
from adaptcommand.evaluation.routine_knowledge import (
    EVERYONE,
    describe_settings,
    knowledge_metrics,
    message_actions,
    policy_reply,
    session_settings,
    turn_knowledge,
    usual_settings,
)
from adaptcommand.model.arm_registry import POLICY, REGISTRY

extract = ActionExtractor().extract_actions
ROUTINE = {"triggers": {"time_of_day": "evening"},
           "actions": {"lights": {"brightness": 50, "color": "warm"}, "ac": {"temperature": 21}, "tv": None}}
DIALOG = {"persona_id": "persona_000", "session_id": 4, "meta": {"time_of_day": "evening"}, "applied_routines": [0],
          "routines": [ROUTINE],
          "messages": [{"role": "user", "text": "Turn on the lights."}, {"role": "assistant", "text": "What brightness?"},
                       {"role": "user", "text": "50%."}, {"role": "assistant", "text": "Lights at 50%."},
                       {"role": "user", "text": "And the AC to 22 degrees."}, {"role": "assistant", "text": "AC at 22."}]}


def test_settings_open_until_anyone_states_them():
    settings = {s.key: s for s in session_settings(DIALOG, message_actions(DIALOG, extract))}
    # brightness: the user says 50% at message 2 -> open at assistant turn 1 only
    assert settings["lights.brightness"].open_turns == (1,) and settings["lights.brightness"].value == 50
    # colour: never stated -> open at every assistant turn
    assert settings["lights.color"].open_turns == (1, 3, 5)
    # AC temperature: first talked about in the message that states it -> never open; TV: never talked about
    assert set(settings) == {"lights.brightness", "lights.color"}


def test_an_assistant_statement_or_proposal_closes_a_setting():
    """Once the reference assistant has said a value (or proposed one in a question), repeating it is copying."""
    said = {**DIALOG, "messages": [
        {"role": "user", "text": "Turn on the lights."},
        {"role": "assistant", "text": "Lights on at 50% brightness, warm color."},
        {"role": "user", "text": "Thanks."}, {"role": "assistant", "text": "You're welcome."}]}
    settings = {s.key: s for s in session_settings(said, message_actions(said, extract))}
    # the turn that states them is still open (the history before it does not say them); later ones are not
    assert settings["lights.brightness"].open_turns == (1,) and settings["lights.color"].open_turns == (1,)
    proposed = {**DIALOG, "messages": [
        {"role": "user", "text": "Turn on the lights."}, {"role": "assistant", "text": "Your usual 50% brightness?"},
        {"role": "user", "text": "Yes."}, {"role": "assistant", "text": "Done."}]}
    settings = {s.key: s for s in session_settings(proposed, message_actions(proposed, extract))}
    assert settings["lights.brightness"].open_turns == (1,) and settings["lights.color"].open_turns == (1, 3)
    # repeating the assistant's earlier turn scores nothing
    actions = message_actions(said, extract)
    records = [{"dialog_index": 0, "turn_index": 3,
                "knowledge": turn_knowledge(session_settings(said, actions), 3,
                                            extract(policy_reply("echo_assistant", said, 3, actions), said["messages"][:3]))}]
    assert records[0]["knowledge"]["routine_testable"] == [] and knowledge_metrics(records)["routine_settings"] == 0


LATER = {**DIALOG, "messages": DIALOG["messages"][:4] + [{"role": "user", "text": "And turn on the AC."},
                                                         {"role": "assistant", "text": "What temperature?"}]}


def test_a_value_volunteered_before_its_device_comes_up_counts():
    """Stating the user's AC setting while the session is still about the lights is memory too; the
    setting counts because the AC comes up later, while its value is still unknown."""
    settings = {s.key: s for s in session_settings(LATER, message_actions(LATER, extract))}
    assert settings["ac.temperature"].open_turns == (1, 3, 5) and settings["ac.temperature"].testable_turns == (5,)
    records = _records(list(settings.values()), {1: {"ac": {"temperature": 21}}, 5: {}})
    assert records[0]["knowledge"]["routine_hits"] == ["ac.temperature"]
    assert knowledge_metrics(records)["routine_recall"] == pytest.approx(1 / 3)  # AC hit; brightness, colour not


def test_spontaneous_session_has_no_settings():
    spontaneous = {**DIALOG, "applied_routines": None}
    assert session_settings(spontaneous, message_actions(spontaneous, extract)) == []


def _records(settings, replies, seed=None):
    return [{"dialog_index": 0, "seed": seed, "turn_index": t, "knowledge": turn_knowledge(settings, t, a)}
            for t, a in replies.items()]


def test_hits_wrongs_and_f1_by_hand():
    settings = session_settings(DIALOG, message_actions(DIALOG, extract))
    replies = {1: {"lights": {"brightness": 50, "color": "cool"}},  # brightness hit, colour wrong (its first statement)
               3: {"lights": {"brightness": 40}},                    # brightness closed by then: not counted
               5: {"lights": {"color": "warm"}}}                     # colour already decided at turn 1: ignored
    records = _records(settings, replies)
    assert records[0]["knowledge"]["routine_hits"] == ["lights.brightness"]
    assert records[0]["knowledge"]["routine_wrongs"] == ["lights.color"]
    assert records[1]["knowledge"]["routine_hits"] == records[1]["knowledge"]["routine_wrongs"] == []
    m = knowledge_metrics(records)
    # 2 settings, 1 hit, 1 wrong: recall 1/2, precision 1/2, F1 = 2*1 / (2 + 1 + 1)
    assert (m["routine_settings"], m["routine_recall"], m["routine_precision"]) == (2, 0.5, 0.5)
    assert m["routine_f1"] == pytest.approx(0.5)
    # the same replies in another order: the colour's first statement is now the right one
    m = knowledge_metrics(_records(settings, {5: replies[5], 1: {"lights": {"brightness": 50}}}))
    assert (m["routine_recall"], m["routine_precision"], m["routine_f1"]) == (1.0, 1.0, 1.0)
    silent = knowledge_metrics(_records(settings, {t: {} for t in (1, 3, 5)}))
    assert silent["routine_f1"] == 0.0 and silent["routine_precision"] is None


@pytest.mark.parametrize("truth", ["warm", "cool", "neutral"])
def test_varying_guesses_never_beat_the_better_consistent_one(truth):
    """A setting open at two turns: stating A then B scores at most the better of A twice or B twice."""
    dialog = {**DIALOG, "routines": [{**ROUTINE, "actions": {"lights": {"color": truth}}}]}
    settings = session_settings(dialog, message_actions(dialog, extract))
    assert [s.open_turns for s in settings] == [(1, 3, 5)]

    def f1(first, second):
        replies = {1: {"lights": {"color": first}}, 3: {"lights": {"color": second}}}
        return knowledge_metrics(_records(settings, replies))["routine_f1"]

    for a, b in itertools.permutations(("warm", "cool", "neutral"), 2):
        assert f1(a, b) <= max(f1(a, a), f1(b, b))
        assert f1(a, b) == f1(a, a)  # the first statement decides


def test_sessions_are_scored_per_seed():
    """Two seeds' replies to the same session are two sessions, never one union of their hits and wrongs."""
    settings = session_settings(DIALOG, message_actions(DIALOG, extract))
    right, wrong = {1: {"lights": {"color": "warm"}}}, {1: {"lights": {"color": "cool"}}}
    m = knowledge_metrics(_records(settings, right, seed=0) + _records(settings, wrong, seed=1))
    # 2 settings per seed; seed 0: one hit; seed 1: one wrong -> F1 = 2*1 / (4 + 1 + 1)
    assert (m["routine_settings"], m["routine_f1"]) == (4, pytest.approx(1 / 3))


def test_only_settings_open_at_evaluated_turns_count():
    """With a cap on turns (--max_examples), a setting whose open turns were not evaluated is not counted."""
    settings = session_settings(DIALOG, message_actions(DIALOG, extract))
    assert knowledge_metrics(_records(settings, {1: {}}))["routine_settings"] == 2
    assert knowledge_metrics(_records(settings, {3: {}}))["routine_settings"] == 1  # only the colour is open at 3
    # a right guess for a setting that is not testable at any evaluated turn is not counted: with only
    # turn 1 evaluated, the AC (testable at turn 5 alone) is out of the denominator and its hit too
    later = session_settings(LATER, message_actions(LATER, extract))
    m = knowledge_metrics(_records(later, {1: {"ac": {"temperature": 21}}}))
    assert (m["routine_settings"], m["routine_recall"], m["routine_precision"]) == (2, 0.0, None)


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
    assert policy_reply("echo_assistant", DIALOG, 3, actions) == "What brightness?"
    # turn 3: only the lights have been talked about (the AC comes up at message 4)
    assert extract(policy_reply("oracle", DIALOG, 3, actions)) == {"lights": {"brightness": 50, "color": "warm"}}
    assert extract(policy_reply("oracle", DIALOG, 5, actions)) == {"lights": {"brightness": 50, "color": "warm"},
                                                                    "ac": {"temperature": 21}}


def clean_rows(rows):
    with tempfile.TemporaryDirectory() as folder:
        return clean(write_raw(folder, *rows))


def random_guesses(seed):
    """A memory-free hedger: a random value for every parameter of every device talked about, new each turn."""
    rng = random.Random(seed)

    def reply(dialog, turn_index, actions, usual):
        talked = {d for a in actions[: turn_index + 1] for d in a}
        return describe_settings({d: {p: rng.choice([True, False]) if spec[0] == "bool" else rng.choice(spec[1])
                                      if spec[0] == "cat" else rng.randint(spec[1], spec[2])
                                      for p, spec in DEVICES[d].items()} for d in talked})
    return reply


def everything_usual_everywhere(dialog, turn_index, actions, usual):
    """The population's habits for every device at every turn, whether talked about or not."""
    return describe_settings({d: {p: values[0] for p, values in ps.items()} for d, ps in usual[EVERYONE].items()})


def rotate_everywhere(dialog, turn_index, actions, usual):
    """rotate_usual over every device at every turn: hedging on settings that have not come up yet too."""
    return describe_settings({d: {p: values[(turn_index // 2) % len(values)] for p, values in ps.items()}
                              for d, ps in usual[EVERYONE].items()})


def confident_usual(dialog, turn_index, actions, usual):
    """An abstainer: the population's most common value only for parameters where it holds in at least a
    quarter of all train routine sessions (F1 pays for not guessing where guesses are poor)."""
    ranked = usual[EVERYONE]
    talked = {d for a in actions[: turn_index + 1] for d in a}
    return describe_settings({d: {p: values[0] for p, values in ps.items() if usual["shares"][(d, p)] >= 0.25}
                              for d, ps in ranked.items() if d in talked})


def echo_history(dialog, turn_index, actions, usual):
    """The last four messages, user and assistant, repeated."""
    return " ".join(m["text"] for m in dialog["messages"][max(0, turn_index - 4):turn_index]) or "Okay."


MEMORY_FREE = {"silent": None, "echo": None, "echo_assistant": None, "rotate_usual": None,
               "random_guesses": random_guesses(0), "everything_usual_everywhere": everything_usual_everywhere,
               "rotate_everywhere": rotate_everywhere, "echo_history": echo_history, "confident_usual": confident_usual}


def top_value_shares(dialogs, indices):
    """{(device, param): the share of train routine sessions whose routine sets the population's most common value}."""
    counts = {}
    for i in indices:
        d = dialogs[i]
        for device, params in (prescribed_settings(d.get("meta"), d.get("routines") or [], d.get("applied_routines")) or {}).items():
            for param, value in params.items():
                counts.setdefault((device, param), Counter())[value] += 1
    return {key: c.most_common(1)[0][1] / sum(c.values()) for key, c in counts.items()}


def score_policies(dialogs, policies):
    """Per policy, the macro means of routine F1 and parameter F1 on the test split."""
    splits = make_splits(dialogs)
    turns = collect_turns(dialogs, {p: s["test"] for p, s in splits.items()})
    scorer = TurnScorer(BagOfWordsEmbedder())
    usual = usual_settings(dialogs, {p: s["train"] for p, s in splits.items()})
    usual["shares"] = top_value_shares(dialogs, [i for s in splits.values() for i in s["train"]])
    out = {}
    for arm, custom in policies.items():
        reply = custom or (lambda d, t, a, u, arm=arm: policy_reply(arm, d, t, a, u))
        replies = [reply(dialogs[t["dialog_index"]], t["turn_index"], scorer.dialog_state(dialogs, t["dialog_index"])[0],
                         usual) for t in turns]
        per_persona = aggregate_per_persona(scorer.score(dialogs, turns, replies))
        out[arm] = {k: sum(m[k] for m in per_persona.values() if m[k] is not None) / len(per_persona)
                    for k in ("routine_f1", "param_f1")}
    return out


@pytest.fixture(scope="module")
def policy_scores():
    """Per policy, per-persona metrics on the demo test split (20 personas)."""
    dialogs, _, _ = clean_rows(generate(20, 20, seed=11))
    return score_policies(dialogs, {arm.name: None for arm in REGISTRY if arm.kind == POLICY})


def test_silence_and_echo_score_nothing_and_memory_scores_high(policy_scores):
    assert policy_scores["silent"]["routine_f1"] == 0.0
    assert policy_scores["echo"]["routine_f1"] <= 0.05
    assert policy_scores["oracle"]["routine_f1"] >= 0.9


def test_habit_memory_sits_between_the_population_and_perfect_memory(policy_scores):
    """The user's own habits beat everyone's habits, and both fall short of knowing the session's routine."""
    user, everyone = policy_scores["user_usual"]["routine_f1"], policy_scores["everyone_usual"]["routine_f1"]
    assert 0.05 < everyone < user < policy_scores["oracle"]["routine_f1"]


@pytest.mark.parametrize("wording", [WordingOptions(),
                                     WordingOptions(identity_cues="none", proactive_share=0.6)],
                         ids=["default", "proactive_0.6_no_identity_cues"])
def test_no_memory_free_policy_beats_the_population_habits(wording):
    """Copying the dialogue or hedging over guesses never scores above remembering everyone's habits
    (20 personas x 50 sessions, the metric-integrity issue's data sizes)."""
    dialogs, _, _ = clean_rows(generate(20, 50, seed=5, options=wording))
    scores = score_policies(dialogs, {**MEMORY_FREE, "everyone_usual": None, "user_usual": None})
    everyone = scores["everyone_usual"]["routine_f1"]
    for arm in MEMORY_FREE:
        assert scores[arm]["routine_f1"] <= everyone + 0.02, (arm, scores[arm]["routine_f1"], everyone)
    assert scores["echo_assistant"]["routine_f1"] <= 0.05
    assert scores["user_usual"]["routine_f1"] > everyone + 0.1  # memory of the user still pays


def test_usual_settings_take_the_most_frequent_value_per_user_and_overall():
    def session(persona, temperature, applied=True):
        routine = {"triggers": {}, "actions": {"ac": {"temperature": temperature}, "lights": None}}
        return {"persona_id": persona, "meta": {}, "routines": [routine], "applied_routines": [0] if applied else None,
                "messages": []}
    dialogs = [session("a", 20), session("a", 20), session("a", 25), session("b", 25), session("b", 25),
               session("b", 22), session("a", 30, applied=False), session("b", 18)]
    usual = usual_settings(dialogs, {"a": [0, 1, 2, 6], "b": [3, 4, 5]})  # index 7 is not in train
    assert usual["a"] == {"ac": {"temperature": [20, 25]}} and usual["b"] == {"ac": {"temperature": [25, 22]}}
    assert usual[EVERYONE] == {"ac": {"temperature": [25, 20, 22]}}  # 25 three times, 20 twice, 22 once
    actions = [{"ac": {}}]
    assert extract(policy_reply("user_usual", dialogs[0], 0, actions, usual)) == {"ac": {"temperature": 20}}
    assert extract(policy_reply("everyone_usual", dialogs[0], 0, actions, usual)) == {"ac": {"temperature": 25}}
    assert policy_reply("user_usual", dialogs[0], 0, [{}], usual) == "Okay."  # no device talked about yet
    # rotate_usual: the population's values in turn, one per assistant turn (indices 1, 3, 5, 7)
    assert [extract(policy_reply("rotate_usual", dialogs[0], t, actions * 8, usual))["ac"]["temperature"]
            for t in (1, 3, 5, 7)] == [25, 20, 22, 25]


def test_parameter_f1_still_rewards_the_echo(policy_scores):
    """The two metrics measure different things: copying the user wins on the reference-matching one."""
    assert policy_scores["echo"]["param_f1"] >= 0.6
    assert policy_scores["echo"]["param_f1"] > 10 * max(policy_scores["echo"]["routine_f1"], 0.01)
    assert policy_scores["silent"]["param_f1"] == 0.0
