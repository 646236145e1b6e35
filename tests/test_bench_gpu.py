"""benchmarks/bench_gpu.py runs end to end on the CPU with --tiny, so the GPU check is not dead code."""

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_gpu_runs_every_step_on_a_tiny_model():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--tiny", "--device", "cpu"],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    for step in ("(a) one by one: 4 steps", "(b) stacked K=2", "(b) stacked K=4", "(c) serving 12 adapters",
                 "(d) 16 replies", "(e) 3 cloze items", "the whole study:"):
        assert step in out, out
    assert "losses finite: True" in out and "float32 (adapter)" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("settings: ") and json.loads(last.removeprefix("settings: "))["training.parallel_personas"] in (2, 4)
