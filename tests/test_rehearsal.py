import importlib.util

from conftest import ROOT


def _rehearsal():
    spec = importlib.util.spec_from_file_location("rehearsal", ROOT / "benchmarks" / "rehearsal.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(personas, train_s, eval_s, eval_mb):
    stages = [("data", 0.2, 30), ("train all", train_s, 2000), ("evaluate", eval_s, eval_mb)]
    return {"personas": personas, "seconds": sum(s for _, s, _ in stages),
            "stages": [{"stage": name, "seconds": s, "seconds_per_user": s / personas, "peak_rss_mb": mb}
                       for name, s, mb in stages]}


def test_the_scaling_table_puts_each_stage_per_user_against_the_smallest_run():
    table = _rehearsal().scaling_table([_run(25, 25.0, 300.0, 1900), _run(200, 180.0, 2640.0, 2850)]).splitlines()
    assert table[0] == ("| stage | 25: s/user | 200: s/user | 25: peak MB | 200: peak MB | s/user 200 vs 25 | "
                        "peak 200 vs 25 |")
    assert table[2] == "| train all | 1.000 | 0.900 | 2000 | 2000 | 0.90x | 1.00x |"
    assert table[3] == "| evaluate | 12.000 | 13.200 | 1900 | 2850 | 1.10x | 1.50x |"
    assert table[4].startswith("| all stages | 13.01 | 14.10 |") and "1.08x" in table[4]
    assert table[5].startswith("| minutes in all | 5.4 | 47.0 |")
    assert not any("| data |" in line for line in table)


def test_the_fixed_cost_per_adapter_is_the_stage_less_its_train_logs(tmp_path):
    """Three adapters whose train logs time 2, 3 and 4 s of a 12 s stage: 1 s each outside their training."""
    rehearsal = _rehearsal()
    for k, seconds in enumerate((2.0, 3.0, 4.0)):
        folder = tmp_path / "lora_per_user" / "seed_0" / f"persona_{k:03d}"
        folder.mkdir(parents=True)
        (folder / "train_log.json").write_text(f'{{"seconds": {seconds}}}')
    row = {"stage": "train per_user", "seconds": 12.0}
    row.update(rehearsal.fixed_cost(row, tmp_path / "lora_per_user"))
    assert row == {"stage": "train per_user", "seconds": 12.0, "adapters_trained": 3, "outside_s_per_adapter": 1.0}
    assert rehearsal.fixed_cost(row, tmp_path / "missing") == {"adapters_trained": 0, "outside_s_per_adapter": None}
    run = {"personas": 25, "stages": [row, {"stage": "train per_user_on_all", "seconds": 5.0}]}
    table = rehearsal.fixed_cost_table([run]).splitlines()
    assert table[0] == "| stage | 25: adapters | 25: s per adapter outside training |"
    assert table[2] == "| train per_user | 3 | 1.000 |"
    assert table[3] == "| train per_user_on_all |  |  |"


def test_fixed_costs_fill_only_the_training_rows_that_lack_one(tmp_path):
    rehearsal = _rehearsal()
    folder = tmp_path / "lora_per_user" / "seed_0" / "persona_000"
    folder.mkdir(parents=True)
    (folder / "train_log.json").write_text('{"seconds": 2.5}')
    recorded = {"adapters_trained": 7, "outside_s_per_adapter": 0.25}
    rows = [{"stage": f"train {scope}", "seconds": 3.0, **({} if scope == "per_user" else recorded)}
            for scope in rehearsal.SCOPES]
    rehearsal.add_fixed_costs(rows, tmp_path)
    assert rows[1] == {"stage": "train per_user", "seconds": 3.0, "adapters_trained": 1, "outside_s_per_adapter": 0.5}
    assert all(row["outside_s_per_adapter"] == 0.25 for k, row in enumerate(rows) if k != 1)
