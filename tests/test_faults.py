"""Evaluation under faults: unusable adapters are reported and skipped; replies survive kill -9."""

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, build_tiny_model, run_script

from adaptcommand.evaluation.predictions import PredictionStore, fingerprint
from adaptcommand.model.adapters import adapter_problem, save_adapter
from adaptcommand.model.config import GenerationSection
from adaptcommand.model.modeling import load_model_and_tokenizer


def _random_adapter(model_dir, folder, seed=0, targets=("q_proj", "v_proj")):
    from peft import LoraConfig, get_peft_model

    model, _, _ = load_model_and_tokenizer(str(model_dir), device="cpu")
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=list(targets), init_lora_weights=False),
                                adapter_name="x")
    save_adapter(peft_model, "x", folder, {"note": "random"})
    return folder


@pytest.fixture(scope="module")
def wide_model_dir(tmp_path_factory):
    """A tiny model of another width: its adapters do not fit the usual tiny model."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = build_tiny_model(tmp_path_factory.mktemp("wide"))
    config = LlamaConfig.from_pretrained(folder)
    config.hidden_size, config.intermediate_size = 48, 96
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def test_adapter_problems_name_the_reason(tiny_model_dir, wide_model_dir, tmp_path):
    model, _, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    good = _random_adapter(tiny_model_dir, tmp_path / "good")
    assert adapter_problem(good, model) is None

    garbage = _random_adapter(tiny_model_dir, tmp_path / "garbage")
    (garbage / "adapter_model.safetensors").write_bytes(b"\x01\x02garbage")
    assert "adapter_model.safetensors corrupt or truncated" in adapter_problem(garbage, model)
    truncated = _random_adapter(tiny_model_dir, tmp_path / "truncated")
    data = (truncated / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(data[: len(data) // 2])
    assert "corrupt or truncated" in adapter_problem(truncated, model)

    other_base = _random_adapter(wide_model_dir, tmp_path / "other_base")
    assert "trained for another base model" in adapter_problem(other_base, model)

    renamed = _random_adapter(tiny_model_dir, tmp_path / "renamed")
    config = json.loads((renamed / "adapter_config.json").read_text())
    (renamed / "adapter_config.json").write_text(json.dumps({**config, "target_modules": ["c_attn"]}))
    assert "target modules ['c_attn'] are not in the model" in adapter_problem(renamed, model)


def _eval_config(tmp_path, model_dir, demo_files, models, **generation):
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({
        "model": {"name": str(model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "generation": {"max_new_tokens": 4, "batch_size": 1, **generation},
        "evaluation": {"cloze": False},
        "adapters": {"lora_all": str(models / "lora_all"), "lora_per_user": str(models / "per_user"),
                     "lora_per_user_on_all": str(models / "on_all")},
        "arms": {"names": ["baseline", "lora_per_user"], "best_on_val": False, "n_bootstrap": 100}}))
    return config


def test_unusable_adapters_are_reported_and_the_rest_evaluated(tiny_model_dir, demo_files, tmp_path):
    models = tmp_path / "models"
    for k, persona in enumerate(("persona_000", "persona_001", "persona_002")):
        _random_adapter(tiny_model_dir, models / "per_user" / "seed_0" / persona, seed=k)
    broken = models / "per_user" / "seed_0" / "persona_001"
    (broken / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    (models / "per_user" / "seed_0" / "persona_002" / "adapter_config.json").unlink()
    config = _eval_config(tmp_path, tiny_model_dir, demo_files, models)
    out = tmp_path / "out"
    result = run_script("eval_lora.py", "--config", config, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stdout.splitlines() if "unusable adapter" in line]
    assert len(lines) == 2  # one line per unusable folder, naming it and the reason
    assert any(str(broken) in line and "corrupt or truncated" in line for line in lines)
    assert any("persona_002" in line and "missing adapter_config.json" in line for line in lines)
    summary = json.loads((out / "arm_metrics.json").read_text())
    assert set(summary["unusable_adapters"]["lora_per_user"]) == {str(broken),
                                                                  str(models / "per_user" / "seed_0" / "persona_002")}
    assert summary["arms"]["lora_per_user"]["personas"] == 1  # persona_000 still evaluated

    (models / "per_user" / "seed_0" / "persona_000" / "adapter_model.safetensors").write_bytes(b"")
    result = run_script("eval_lora.py", "--config", config, "--output_dir", tmp_path / "out2")
    assert result.returncode == 1 and "no usable adapter at all for lora_per_user" in result.stderr
    assert "Traceback" not in result.stderr
    assert (tmp_path / "out2" / "arm_metrics.json").is_file()  # the other arms are still written


def test_store_reuses_only_matching_fingerprints(tmp_path):
    store = PredictionStore.open(tmp_path)
    key = {"split": "test", "arm": "baseline", "seed": None, "dialog_index": 3, "turn_index": 1, "persona_id": "p"}
    fp = fingerprint("prompt", "model", GenerationSection(max_new_tokens=4, batch_size=8))
    store.append([{**key, "prediction": "Lights at 40%.", "fingerprint": fp}])
    with store.path.open("a") as f:
        f.write('{"split": "test", "arm": "base')  # torn by a kill
    again = PredictionStore.open(tmp_path)
    k = ("test", "baseline", None, 3, 1)
    # batch size changes no reply; anything else does
    assert again.lookup(k, fingerprint("prompt", "model", GenerationSection(max_new_tokens=4, batch_size=1))) == "Lights at 40%."
    assert again.lookup(k, fingerprint("prompt", "model", GenerationSection(max_new_tokens=5, batch_size=8))) is None
    assert again.lookup(k, fingerprint("other prompt", "model", GenerationSection(max_new_tokens=4, batch_size=8))) is None
    assert (again.reused, again.changed) == (1, 2)
    assert PredictionStore.open(tmp_path, fresh=True).stored == {}


def _counts(stdout):
    match = re.search(r"predictions: (\d+) reused from \S+, (\d+) generated", stdout)
    return int(match.group(1)), int(match.group(2))


def _outputs(folder):
    summary = json.loads((folder / "arm_metrics.json").read_text())
    summary.pop("seconds")
    summary.pop("stage_seconds")  # wall times of this run
    rows = list(csv.DictReader((folder / "per_persona.csv").open()))
    return summary, rows, (folder / "comparison.csv").read_text()


def test_kill_9_then_rerun_generates_only_what_is_missing(tiny_model_dir, demo_files, tmp_path):
    models = tmp_path / "models"
    for k, persona in enumerate(("persona_000", "persona_001", "persona_002")):
        _random_adapter(tiny_model_dir, models / "per_user" / "seed_0" / persona, seed=k)
    config = _eval_config(tmp_path, tiny_model_dir, demo_files, models, max_new_tokens=24)
    whole = tmp_path / "whole"
    result = run_script("eval_lora.py", "--config", config, "--output_dir", whole)
    assert result.returncode == 0, result.stderr
    total = _counts(result.stdout)[1]
    assert total == len((whole / "predictions.jsonl").read_text().splitlines()) > 20

    out = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "eval_lora.py"), "--config", str(config),
                                "--output_dir", str(out)], cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    predictions = out / "predictions.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if predictions.is_file() and len(predictions.read_text().splitlines()) >= 5:
            break
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    kept = len([line for line in predictions.read_text().splitlines() if line.endswith("}")])
    assert 5 <= kept < total, "the kill came too late to test resuming"

    result = run_script("eval_lora.py", "--config", config, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    reused, generated = _counts(result.stdout)
    assert reused == kept and generated == total - kept
    assert _outputs(out) == _outputs(whole)

    result = run_script("eval_lora.py", "--config", config, "--output_dir", out)
    assert _counts(result.stdout) == (total, 0)
    result = run_script("eval_lora.py", "--config", config, "--output_dir", out, "--fresh")
    assert _counts(result.stdout) == (0, total)


def test_a_model_rebuilt_under_the_same_name_is_another_model(tiny_model_dir, tmp_path):
    """Reused replies are matched on the model's files, not only its name."""
    import shutil

    from adaptcommand.model.modeling import model_identity

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    before = model_identity(str(folder))
    assert model_identity(str(folder)) == before
    build_tiny_model(folder, seed=1)  # rebuilt in place, same name
    assert model_identity(str(folder)) != before
    assert fingerprint("p", model_identity(str(folder)), GenerationSection()) != fingerprint("p", before, GenerationSection())
