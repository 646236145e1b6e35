"""The study's own questions: persona traits, rank correlations, compute against gain, memorisation, the curve."""

import math

import numpy as np
import pandas as pd
import pytest

from adaptcommand.evaluation.analysis import (
    cloze_item_breakdown,
    compute_against_gain,
    curve_points,
    memorization_gaps,
    persona_gains,
)
from adaptcommand.evaluation.persona_traits import entropy_bits, persona_traits, spearman_interval, value_entropy


def _routine(temperature, color):
    return {"triggers": {}, "actions": {"ac": {"temperature": temperature}, "lights": {"color": color}}}


def _session(persona, routines, applied):
    return {"persona_id": persona, "routines": routines, "applied_routines": applied, "meta": {}, "messages": []}


def test_traits_of_two_personas_computed_by_hand():
    steady = [_routine(22, "warm"), _routine(22, "warm")]  # the same values in both routines
    mixed = [_routine(20, "warm"), _routine(26, "cool")]   # every parameter split 50/50
    dialogs = ([_session("a", steady, [0]), _session("a", steady, [1]), _session("a", steady, []),
                _session("a", steady, [0])]
               + [_session("b", mixed, [0]), _session("b", mixed, [0]), _session("b", mixed, [1]),
                  _session("b", mixed, [])])
    splits = {"a": {"train": [0, 1, 2], "val": [], "test": [3]}, "b": {"train": [4, 5, 6], "val": [7], "test": []}}
    traits = persona_traits(dialogs, splits).set_index("persona_id")
    assert traits.loc["a", "routines"] == 2 and traits.loc["a", "value_entropy"] == 0.0
    assert traits.loc["b", "value_entropy"] == pytest.approx(1.0)  # two parameters, 1 bit each
    assert traits.loc["a", "routine_share"] == pytest.approx(3 / 4) and traits.loc["b", "routine_share"] == pytest.approx(3 / 4)
    assert traits.loc["a", "train_sessions"] == 3
    # train settings: a states (22, warm) twice; b (20, warm) twice and (26, cool) once.
    # population's most frequent: temperature 22 (2) vs 20 (2): tie -> the smaller, 20; color warm (4).
    # a: own right 4/4, population right 2/4 (warm twice) -> gap 0.5; b: own 4/6 (20 and warm twice), population 4/6 -> 0
    assert traits.loc["a", "habit_gap"] == pytest.approx(0.5) and traits.loc["b", "habit_gap"] == pytest.approx(0.0)


def test_entropy_and_value_entropy():
    assert entropy_bits(["x"] * 4) == 0.0 and entropy_bits(["x", "y", "z", "w"]) == pytest.approx(2.0)
    assert value_entropy([]) == 0.0


def test_spearman_interval_on_monotone_noisy_and_degenerate_data():
    rho, low, high, n = spearman_interval([1, 2, 3, 4, 5, 6], [10, 20, 30, 40, 50, 60], n_boot=200)
    assert (rho, low, high, n) == (pytest.approx(1.0), pytest.approx(1.0), pytest.approx(1.0), 6)
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    rho, low, high, _ = spearman_interval(x.tolist(), (-x + rng.normal(scale=0.5, size=40)).tolist(), n_boot=300)
    assert -1 <= low <= rho <= high < 0  # a clear negative association, interval below 0
    assert spearman_interval([1, 2, 3], [5, 5, 5])[0] is None  # a constant side has no rank correlation
    assert spearman_interval([1, None, 3, float("nan")], [1, 2, 3, 4]) == (None, None, None, 2)


def _seeds():
    rows = []
    for persona, base, unified, user in (("p1", 0.2, 0.3, 0.6), ("p2", 0.4, 0.3, 0.4)):
        rows += [{"persona_id": persona, "arm": "baseline", "seed": np.nan, "routine_f1": base},
                 {"persona_id": persona, "arm": "lora_all", "seed": 0.0, "routine_f1": unified},
                 {"persona_id": persona, "arm": "lora_per_user", "seed": 0.0, "routine_f1": user},
                 {"persona_id": persona, "arm": "lora_all", "seed": 1.0, "routine_f1": unified + 0.1}]
    return pd.DataFrame(rows)


def test_compute_against_gain_pairs_each_seed_with_its_own_unified_adapter():
    costs = pd.DataFrame([{"arm": "lora_all", "seed": 0, "seconds": 100.0}, {"arm": "lora_all", "seed": 1, "seconds": 90.0},
                          {"arm": "lora_per_user", "seed": 0, "seconds": 40.0}])
    table = compute_against_gain(costs, _seeds(), metrics=("routine_f1",)).set_index(["arm", "seed"])
    assert table.loc[("lora_per_user", 0), "delta_vs_baseline_routine_f1"] == pytest.approx(0.2)   # (0.4 + 0) / 2
    assert table.loc[("lora_per_user", 0), "delta_vs_lora_all_routine_f1"] == pytest.approx(0.2)   # (0.3 + 0.1) / 2
    assert table.loc[("lora_all", 1), "delta_vs_baseline_routine_f1"] == pytest.approx(0.1)  # (0.2 + 0) / 2
    assert "delta_vs_lora_all_routine_f1" not in table.columns or math.isnan(table.loc[("lora_all", 0),
                                                                                       "delta_vs_lora_all_routine_f1"])


def test_persona_gains_and_memorization_gaps():
    frame = _seeds().groupby(["persona_id", "arm"], as_index=False)["routine_f1"].mean()
    gains = persona_gains(frame, "routine_f1").set_index("persona_id")
    assert list(gains.columns) == ["lora_per_user - lora_all"]
    assert gains.loc["p1", "lora_per_user - lora_all"] == pytest.approx(0.6 - 0.35)
    memo = pd.DataFrame([{"arm": "lora_per_user", "split": "train", "turns": 6, "cloze_items": 11, "routine_f1": 0.9,
                          "cloze_top1": 0.8},
                         {"arm": "lora_per_user", "split": "test", "turns": 30, "cloze_items": 253, "routine_f1": 0.4,
                          "cloze_top1": 0.5}])
    gap = memorization_gaps(memo).iloc[0]
    assert gap["gap_routine_f1"] == pytest.approx(0.5) and gap["gap_cloze_top1"] == pytest.approx(0.3)
    assert (gap["train_cloze_items"], gap["test_cloze_items"], gap["train_turns"]) == (11, 253, 6)


def test_curve_points_keep_the_per_user_arms_against_the_unified_adapter():
    compared = pd.DataFrame([
        {"arm": "lora_per_user_on_all", "ref": "lora_all", "metric": "routine_f1", "personas": 12, "macro_delta": 0.1,
         "ci_low": 0.0, "ci_high": 0.2, "verdict": "no difference"},
        {"arm": "lora_per_user_on_all", "ref": "baseline", "metric": "routine_f1", "personas": 12, "macro_delta": 0.3,
         "ci_low": 0.2, "ci_high": 0.4, "verdict": "wins"}])
    points = curve_points({10: compared, 5: compared.assign(macro_delta=[0.05, 0.3])})
    assert points[["train_sessions", "macro_delta"]].values.tolist() == [[5, 0.05], [10, 0.1]]


def test_stated_value_sources_tell_the_sessions_value_from_the_habits():
    from adaptcommand.evaluation.analysis import stated_value_sources

    routine = [{"triggers": {}, "actions": {"lights": {"brightness": 50}}}]
    habit = [{"triggers": {}, "actions": {"lights": {"brightness": 30}}}]

    def dialog(persona, routines):
        return {"persona_id": persona, "routines": routines, "applied_routines": [0], "meta": {},
                "messages": [{"role": "user", "text": "Turn on the lights please."},
                             {"role": "assistant", "text": "Which brightness?"},
                             {"role": "user", "text": "Brightness 50 please."},
                             {"role": "assistant", "text": "Done."}]}

    dialogs = [dialog("a", habit), dialog("a", habit), dialog("b", habit), dialog("a", routine)]
    splits = {"a": {"train": [0, 1], "val": [], "test": [3]}, "b": {"train": [2], "val": [], "test": []}}
    predictions = [{"arm": "right", "seed": 0, "persona_id": "a", "dialog_index": 3, "turn_index": 1,
                    "prediction": "Lights at 50% brightness."},
                   {"arm": "habit", "seed": 0, "persona_id": "a", "dialog_index": 3, "turn_index": 1,
                    "prediction": "Lights at 30% brightness."},
                   {"arm": "habit", "seed": 0, "persona_id": "a", "dialog_index": 3, "turn_index": 3,
                    "prediction": "Lights at 50% brightness."},  # after the user said 50: closed, not counted
                   {"arm": "silent", "seed": None, "persona_id": "a", "dialog_index": 3, "turn_index": 1,
                    "prediction": "Okay."}]
    table = stated_value_sources(dialogs, splits, predictions).set_index("arm")
    assert table.loc["right", ["stated", "session_value", "user_usual_value"]].tolist() == [1, 1.0, 0.0]
    assert table.loc["habit", ["stated", "session_value", "user_usual_value", "everyone_usual_value"]].tolist() == \
        [1, 0.0, 1.0, 1.0]
    assert "silent" not in table.index  # states nothing


def test_projected_mde_scales_the_reported_one_by_the_square_root_of_personas():
    from adaptcommand.evaluation.analysis import projected_mde
    from adaptcommand.evaluation.study_stats import minimum_detectable_effect

    mde_12 = minimum_detectable_effect(0.2, 12, 0.05)
    compared = pd.DataFrame([
        {"arm": "x", "ref": "lora_all", "metric": "routine_f1", "personas": 12, "macro_delta": 0.1, "delta_sd": 0.2,
         "mde": mde_12},
        {"arm": "x", "ref": "lora_all", "metric": "cloze_top1", "personas": 12, "macro_delta": 0.1, "delta_sd": 0.2,
         "mde": None}])
    row = projected_mde(compared, "routine_f1").iloc[0]
    assert row["mde_12"] == pytest.approx(mde_12)
    assert row["mde_200"] == pytest.approx(minimum_detectable_effect(0.2, 200, 0.05))  # (1.96 + 0.84) x 0.2 / sqrt(200)
    assert row["mde_200"] == pytest.approx(0.0396, abs=1e-3)


def test_projected_mde_of_a_secondary_metric_uses_its_sd_at_the_unadjusted_level():
    from adaptcommand.evaluation.analysis import projected_mde
    from adaptcommand.evaluation.study_stats import minimum_detectable_effect

    holm_level_mde = minimum_detectable_effect(0.2, 12, 0.025)  # the primary family had two comparisons
    compared = pd.DataFrame([
        {"arm": "x", "ref": "lora_all", "metric": "routine_f1", "personas": 12, "macro_delta": 0.1, "delta_sd": 0.2,
         "mde": holm_level_mde},
        {"arm": "x", "ref": "lora_all", "metric": "cloze_top1", "personas": 12, "macro_delta": 0.2, "delta_sd": 0.08,
         "mde": None}])
    assert projected_mde(compared, "cloze_top1").empty  # no reported MDE to scale
    cloze = projected_mde(compared, "cloze_top1", alpha=0.05).iloc[0]
    assert cloze["mde_200"] == pytest.approx(2.8016 * 0.08 / 200 ** 0.5, abs=1e-4)  # (1.960 + 0.842) x sd / sqrt(n)
    primary = projected_mde(compared, "routine_f1").iloc[0]
    assert primary["mde_200"] == pytest.approx(minimum_detectable_effect(0.2, 200, 0.025))
    assert primary["mde_200"] > minimum_detectable_effect(0.2, 200, 0.05)


def test_cloze_item_breakdown_splits_top1_by_the_habit_baseline_and_the_item_order():
    def item(arm, dialog, message, correct, habit, in_context=False):
        return {"arm": arm, "seed": 0 if arm == "lora_all" else np.nan, "dialog_index": dialog,
                "message_index": message, "correct": correct, "habit_correct": habit, "in_context": in_context}

    items = pd.DataFrame([
        item("lora_all", 7, 2, False, True),   # dialogue 7's later value (stated after message 0's)
        item("lora_all", 7, 0, True, False),   # dialogue 7's first value
        item("lora_all", 7, 0, True, True),    # the same message's second value: later
        item("lora_all", 7, 4, False, True, in_context=True),  # stated before: left out
        item("lora_all", 9, 1, True, True),    # dialogue 9's first value
        item("baseline", 7, 0, False, False),  # a prompt arm, no seed
    ])
    rows = {r["arm"]: r for r in cloze_item_breakdown(items).to_dict("records")}
    mine = rows["lora_all"]
    assert (mine["seed"], mine["items"], mine["top1"], mine["habit_top1"]) == (0, 4, 0.75, 0.75)
    assert (mine["top1_where_habit_right"], mine["top1_where_habit_wrong"]) == (pytest.approx(2 / 3), 1.0)
    assert (mine["top1_first_value"], mine["top1_later_values"]) == (1.0, 0.5)
    assert rows["baseline"]["items"] == 1 and math.isnan(rows["baseline"]["seed"])
    assert rows["baseline"]["top1_first_value"] == 0.0 and math.isnan(rows["baseline"]["top1_later_values"])
