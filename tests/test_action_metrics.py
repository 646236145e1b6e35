import json
from pathlib import Path

import pytest

from adaptcommand.data.demo_data import generate
from adaptcommand.data.schema import active_actions
from adaptcommand.evaluation.action_metrics import ActionExtractor, ActionMetrics, prescribed_settings

LABELS = Path(__file__).parent / "data" / "labelled_actions.json"
extract = ActionExtractor().extract_actions


# ------------------------------------------------------------ extraction: hand-made hard cases
@pytest.mark.parametrize("text,context,expected", [
    ("It's warm in here, what a lovely place.", None, {}),
    ("I'm watching TV with my cat.", None, {}),
    ("Could you make the lights a bit brighter?", None, {"lights": {}}),
    ("Switch to heat mode and fan speed 2.", None, {"ac": {"mode": "heat", "fan_speed": 2}}),
    ("Put on some treble boost.", None, {"speaker": {"equalizer": "treble boost"}}),
    ("What temperature would you like?", None, {"ac": {}}),
    ("Disarm the alarm, please.", None, {"security": {"armed": False}}),
    ("Arm the security system with the alarm volume at 80.", None, {"security": {"armed": True, "alarm_volume": 80}}),
    ("Set the TV to HDMI 2 at volume 15 and the speaker volume to 40.", None,
     {"tv": {"input_source": "HDMI2", "volume": 15}, "speaker": {"volume": 40}}),
    ("Let's keep it at 50.", ["Could you adjust the lights?", "Sure, what brightness would you like?"],
     {"lights": {"brightness": 50}}),
    ("Set it to 24 degrees in cool mode.", None, {"ac": {"temperature": 24, "mode": "cool"}}),
    ("Dim them to 20% and make them a warm color.", ["Turn on the lamps."], {"lights": {"brightness": 20, "color": "warm"}}),
    ("The air conditioning is now at 19°C on auto.", None, {"ac": {"temperature": 19, "mode": "auto"}}),
    ("Thanks, that's all.", ["Setting the TV volume to 30."], {}),
    ("I'm working on my '78 Harley in the 1920s garage.", ["Set the lights to 60%."], {}),
    # an ask-back names the device and parameter but states no value
    ("Which arming mode would you like?", None, {"security": {}}),
    ("Would you like it armed or disarmed?", ["Check the security system."], {"security": {}}),
    ("Do you want heat or cool mode for the AC?", None, {"ac": {}}),
    ("Would you like warm, cool or neutral colour for the lights?", None, {"lights": {}}),
    ("What TV volume would you like, 20 or 30?", None, {"tv": {}}),
    # a question that proposes one value still states it
    ("Shall I set it to your usual 22 degrees?", ["Turn on the AC."], {"ac": {"temperature": 22}}),
    ("Should I arm the security system?", None, {"security": {"armed": True}}),
])
def test_hard_cases(text, context, expected):
    assert extract(text, context) == expected


def test_context_accepts_message_dicts():
    context = [{"role": "user", "text": "Turn on the TV."}, {"role": "assistant", "text": "What volume would you like?"}]
    assert extract("30 would be perfect.", context) == {"tv": {"volume": 30}}


# ------------------------------------------------------------ extraction: real wording, hand-labelled
def test_labelled_real_messages_meet_targets(sample_dialogues):
    labels = json.loads(LABELS.read_text())["labels"]
    by_persona = {d["persona_id"]: d["messages"] for d in sample_dialogues}
    counts = []
    for persona, items in labels.items():
        for index, expected in items:
            messages = by_persona[persona]
            counts.append(ActionMetrics.compare_actions(extract(messages[index]["text"], messages[:index]), expected))
    assert len(counts) >= 60
    scores = ActionMetrics.aggregate(counts)
    assert scores["device_f1"] >= 0.97, scores
    assert scores["param_f1"] >= 0.95, scores


def test_demo_assistant_turns_state_exactly_the_routine():
    """On the demo data the assistant acts out the routine; extraction must recover it all."""
    _, routines, sessions = generate(6, 30, seed=11)
    checked = 0
    for r_row, s_row in zip(routines, sessions):
        for session in s_row["sessions"]:
            if not session["applied_routines"]:
                continue
            got = {}
            messages = session["messages"]
            for i, message in enumerate(messages):
                if message["role"] == "assistant":
                    for device, params in extract(message["text"], messages[:i]).items():
                        got.setdefault(device, {}).update(params)
            assert got == active_actions(r_row["routines"][session["applied_routines"][0]]["actions"])
            checked += 1
    assert checked > 100


def test_remembered_dialogue_states_give_what_a_fresh_reading_gives():
    """One extractor reused over many calls (it keeps each context's state) equals a fresh extractor per call,
    whatever order the calls come in, and reads a dialogue's history once: n messages, about 2n analyses."""
    _, _, sessions = generate(4, 12, seed=5)
    dialogues = [session["messages"] for row in sessions for session in row["sessions"]]
    calls = [(messages[i]["text"], messages[:i]) for messages in dialogues for i in range(len(messages))]
    fresh = [ActionExtractor().extract_actions(text, context) for text, context in calls]
    reused = ActionExtractor()
    assert [reused.extract_actions(text, context) for text, context in calls[::-1]] == fresh[::-1]
    assert [reused.extract_actions(text, context) for text, context in calls] == fresh
    assert any(fresh) and len(calls) > 400

    counting, analysed = ActionExtractor(), []
    original = counting._analyse
    counting._analyse = lambda text, state: analysed.append(text) or original(text, state)
    messages = max(dialogues, key=len)
    for i in range(len(messages)):
        counting.extract_actions(messages[i]["text"], messages[:i])
    assert len(analysed) == 2 * len(messages) - 1  # each message as the text, and once as context (not the last)


# ------------------------------------------------------------ metrics: hand-computed
PRED = {"lights": {"brightness": 50, "color": "warm"}, "tv": {"volume": 20}}
REF = {"lights": {"brightness": 51, "color": "cool", "mode": "static"}, "ac": {"temperature": 22}}


def test_compare_actions_counts():
    c = ActionMetrics.compare_actions(PRED, REF)
    # devices: pred {lights, tv}, ref {lights, ac} -> tp 1, fp 1, fn 1
    assert (c["device_tp"], c["device_fp"], c["device_fn"]) == (1, 1, 1)
    # triples: no (device, param, value) agrees -> tp 0, fp 3, fn 4
    assert (c["param_tp"], c["param_fp"], c["param_fn"]) == (0, 3, 4)
    # shared numeric pair: lights.brightness 50 vs 51 -> not exact, within 1, error 1
    assert (c["num_n"], c["num_exact"], c["num_within1"], c["num_abs_err"]) == (1, 0, 1, 1)
    # shared categorical pair: lights.color warm vs cool
    assert (c["cat_n"], c["cat_correct"]) == (1, 0)


def test_aggregate_is_micro():
    turns = [ActionMetrics.compare_actions(PRED, REF),
             ActionMetrics.compare_actions({"ac": {"temperature": 22, "mode": "heat"}}, {"ac": {"temperature": 25, "mode": "heat"}}),
             ActionMetrics.compare_actions({}, {})]
    m = ActionMetrics.aggregate(turns)
    # devices tp 1+1, fp 1, fn 1 -> P = 2/3, R = 2/3
    assert m["device_precision"] == pytest.approx(2 / 3) and m["device_recall"] == pytest.approx(2 / 3)
    assert m["device_f1"] == pytest.approx(2 / 3)
    # params: tp 0+1 (ac.mode heat), fp 3+1, fn 4+1 -> P = 1/5, R = 1/6, F1 = 2PR/(P+R) = 2/11
    assert m["param_precision"] == pytest.approx(1 / 5) and m["param_recall"] == pytest.approx(1 / 6)
    assert m["param_f1"] == pytest.approx(2 / 11)
    # numeric pairs: (50, 51) and (22, 25) -> exact 0/2, within1 1/2, MAE (1 + 3) / 2
    assert (m["numerical_exact"], m["numerical_within1"], m["numerical_mae"]) == (0.0, 0.5, 2.0)
    # categorical pairs: color warm/cool wrong, mode heat/heat right -> 1/2
    assert m["categorical_accuracy"] == 0.5


def test_undefined_ratios_are_none_and_macro_skips_them():
    empty = ActionMetrics.aggregate([ActionMetrics.compare_actions({}, {})])
    assert empty["device_precision"] is None and empty["param_f1"] is None and empty["numerical_mae"] is None
    macro = ActionMetrics.macro({
        "p1": [ActionMetrics.compare_actions({"tv": {}}, {"tv": {}})],             # device P = 1
        "p2": [ActionMetrics.compare_actions({"tv": {}, "ac": {}}, {"tv": {}})],   # device P = 1/2
        "p3": [ActionMetrics.compare_actions({}, {})],                             # undefined
    })
    assert macro["device_precision"] == pytest.approx(0.75)
    assert macro["numerical_exact"] is None


# ------------------------------------------------------------ given/private values, routines
ROUTINES = [
    {"triggers": {"time_of_day": "evening", "weather": "rainy"},
     "actions": {"lights": {"brightness": 30, "color": "warm", "mode": "static"}, "ac": {"temperature": 22, "mode": "heat", "fan_speed": 1},
                 "tv": None, "speaker": None, "security": None}},
    {"triggers": {"time_of_day": "morning"},
     "actions": {"lights": {"brightness": 90, "color": "cool", "mode": "static"}, "tv": None, "ac": None, "speaker": None, "security": None}},
]
META = {"time_of_day": "evening", "day_of_week": "weekday", "sun_phase": "after_sunset", "weather": "rainy", "outdoor_temp": "cold"}


def test_given_and_private_values_and_coverage():
    pred = {"lights": {"brightness": 30, "color": "warm"}, "ac": {"temperature": 22}}
    ref = {"lights": {"brightness": 30, "color": "cool", "mode": "static"}, "ac": {"temperature": 22}}
    given = {("lights", "brightness", 30)}  # the user said 30% earlier; the rest is private
    c = ActionMetrics.compare_actions(pred, ref, given)
    assert (c["param_given_tp"], c["param_given_fp"], c["param_given_fn"]) == (1, 0, 0)
    # private: ac 22 right; warm predicted, cool and static expected
    assert (c["param_private_tp"], c["param_private_fp"], c["param_private_fn"]) == (1, 1, 2)
    assert (c["num_ref"], c["cat_ref"]) == (2, 2)
    m = ActionMetrics.aggregate([c])
    assert m["param_given_f1"] == 1.0 and m["param_private_f1"] == pytest.approx(2 / 5)
    # numeric pairs stated: both of 2; categorical: color stated, mode not -> 1 of 2
    assert m["numerical_coverage"] == 1.0 and m["categorical_coverage"] == 0.5


def test_spontaneous_sessions_have_no_routine_and_meta_picks_the_routine():
    assert prescribed_settings(META, ROUTINES, None) is None and prescribed_settings(META, ROUTINES, []) is None
    # both routines listed as applied, only routine 0 matches the evening meta
    assert prescribed_settings(META, ROUTINES, [0, 1])["lights"]["brightness"] == 30
