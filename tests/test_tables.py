"""The evaluation's tables: comparison family, per-arm intervals and what the plot draws."""

import numpy as np
import pandas as pd
import pytest

from adaptcommand.evaluation.plots import arm_comparison, arm_intervals
from adaptcommand.evaluation.tables import arm_table, comparison_pairs, comparisons, persona_frame

REFS = ("baseline", "lora_all", "retrieval")


def _seeds(rng):
    rows = []
    for p in range(12):
        for arm, seeds in (("baseline", [None]), ("retrieval", [None]), ("lora_all", [0, 1]), ("lora_per_user", [0, 1])):
            for seed in seeds:
                if arm == "lora_per_user" and seed == 0 and p % 3 == 0:
                    continue  # some personas lack one seed's adapter
                rows.append({"persona_id": f"p{p:02d}", "arm": arm, "seed": seed, "turns": 5,
                             "routine_f1": rng.uniform(0, 1), "param_f1": rng.uniform(0, 1)})
    return pd.DataFrame(rows)


def test_each_pair_of_arms_is_compared_once():
    arms = ["baseline", "character", "retrieval", "lora_all", "lora_per_user", "best_on_val"]
    pairs = comparison_pairs(arms, REFS)
    # 3 non-reference arms x 3 references, plus the 3 pairs among the references, each once
    assert len(pairs) == 3 * 3 + 3 and len(set(map(frozenset, pairs))) == len(pairs)
    assert ("lora_all", "baseline") in pairs and ("baseline", "lora_all") not in pairs
    seeds = _seeds(np.random.default_rng(0))
    family = comparisons(seeds, comparison_pairs(["baseline", "retrieval", "lora_all", "lora_per_user"], REFS), "routine_f1",
                         (), 200, 10)
    assert len(family) == 6 and family["holm_p"].notna().all()


def test_plotted_interval_is_the_table_interval(tmp_path):
    seeds = _seeds(np.random.default_rng(1))
    table = arm_table(persona_frame(seeds), seeds, "routine_f1", n_boot=500)
    drawn = arm_intervals(seeds, ["routine_f1", "param_f1"], n_boot=500)
    for arm in table.index:
        mean, low, high = drawn[(arm, "routine_f1")]
        assert mean == pytest.approx(table.loc[arm, "routine_f1"])
        assert (low, high) == (table.loc[arm, "routine_f1_ci_low"], table.loc[arm, "routine_f1_ci_high"])
        assert low < mean < high  # whiskers on both sides, none reaching the axis
    assert arm_comparison(seeds, ["routine_f1", "param_f1"], tmp_path / "a.png", 500).read_bytes()[:4] == b"\x89PNG"


def test_arm_table_counts_the_personas_behind_each_mean():
    seeds = _seeds(np.random.default_rng(2))
    seeds.loc[(seeds["arm"] == "retrieval") & (seeds["persona_id"] < "p04"), "routine_f1"] = np.nan
    table = arm_table(persona_frame(seeds), seeds, "routine_f1", n_boot=100)
    assert table.loc["retrieval", "personas"] == 8 and table.loc["baseline", "personas"] == 12
