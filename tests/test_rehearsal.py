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
