import csv
import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_script
from safetensors.torch import load_file


@pytest.fixture()
def config_factory(tmp_path, tiny_model_dir, demo_files):
    splits = json.loads(demo_files["splits_path"].read_text())
    splits["persona_001"]["train"] = splits["persona_001"]["train"][:3]  # uneven
    (tmp_path / "splits.json").write_text(json.dumps(splits))

    def make(name, model_dir=tiny_model_dir, **training):
        cfg = {"model": {"name": str(model_dir), "device": "cpu"},
               "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(tmp_path / "splits.json")},
               "prompt": {"system_template": "You are a home assistant."},
               "lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]},
               "training": {"epochs": 3, "batch_size": 2, "learning_rate": 5e-3, "max_seq_length": 512,
                            "early_stopping_patience": 0, "weight_decay": 0.1, "max_grad_norm": 0.5, **training}}
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(cfg))
        return path
    return make


def test_personas_trained_together_equal_one_by_one(config_factory, tiny_arch_dir, tmp_path):
    alone, together = tmp_path / "alone", tmp_path / "together"
    result = run_script("train_lora_per_user.py", "--config",
                        config_factory("one", tiny_arch_dir, select_by="val_knowledge"), "--output_dir", alone)
    assert result.returncode == 0, result.stderr
    result = run_script("train_lora_per_user.py", "--config",
                        config_factory("k3", tiny_arch_dir, parallel_personas=3, micro_batch_size=2,
                                       select_by="val_knowledge"), "--output_dir", together)
    assert result.returncode == 0, result.stderr
    assert "(3 trained together)" in result.stdout
    for persona in ("persona_000", "persona_001", "persona_002"):
        a = load_file(str(alone / "seed_0" / persona / "adapter_model.safetensors"))
        b = load_file(str(together / "seed_0" / persona / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and len(a) == 2 * 3 * 2  # A and B, 3 modules, 2 layers
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=2e-5, rtol=1e-4)
        log_a = json.loads((alone / "seed_0" / persona / "train_log.json").read_text())
        log_b = json.loads((together / "seed_0" / persona / "train_log.json").read_text())
        assert log_a["best_epoch"] == log_b["best_epoch"] and len(log_a["epochs"]) == len(log_b["epochs"])
        assert log_b["best_val_loss"] == pytest.approx(log_a["best_val_loss"], rel=1e-4)
        # the routine values' log-probability selects the kept epoch in both trainers alike
        # (persona_000's val sessions are spontaneous: no routine value to score, so its last epoch is kept)
        assert log_a["select_by"] == log_b["select_by"] == "val_knowledge"
        knowledge_a, knowledge_b = ([e["val_knowledge"] for e in log["epochs"]] for log in (log_a, log_b))
        if persona == "persona_000":
            assert knowledge_a == knowledge_b == [None] * 3 and log_a["best_epoch"] == 3
        else:
            assert knowledge_b == pytest.approx(knowledge_a, rel=1e-4) and max(knowledge_a) < 0
        assert json.loads((together / "seed_0" / persona / "adapter_config.json").read_text())["r"] == 4
        # the same steps, losses and learning rates per step in both trainers (what TensorBoard plots)
        assert log_a["optimizer_steps"] == log_b["optimizer_steps"] == len(log_b["step_train_loss"])
        assert log_b["step_train_loss"] == pytest.approx(log_a["step_train_loss"], rel=1e-4)
        assert log_b["step_learning_rate"] == pytest.approx(log_a["step_learning_rate"], rel=1e-6)


def test_personas_trained_together_equal_one_by_one_in_bfloat16(config_factory, tiny_arch_dir, tmp_path):
    """The GPU's dtype: the base model in bfloat16, the adapters in float32, both trainers alike within what
    bfloat16's rounding of the activations allows."""
    alone, together = tmp_path / "alone", tmp_path / "together"
    for folder, extra in ((alone, {}), (together, {"parallel_personas": 3, "micro_batch_size": 2})):
        config = config_factory(folder.name, tiny_arch_dir, epochs=1, **extra)
        result = run_script("train_lora_per_user.py", "--config", config, "--output_dir", folder,
                            "--set", "model.dtype=bfloat16")
        assert result.returncode == 0, result.stderr
    for persona in ("persona_000", "persona_001", "persona_002"):
        a = load_file(str(alone / "seed_0" / persona / "adapter_model.safetensors"))
        b = load_file(str(together / "seed_0" / persona / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(t.dtype == torch.float32 for t in a.values())
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=2e-3, rtol=5e-2)
        log_a, log_b = (json.loads((f / "seed_0" / persona / "train_log.json").read_text()) for f in (alone, together))
        assert log_b["step_train_loss"] == pytest.approx(log_a["step_train_loss"], rel=2e-2)


def test_two_processes_split_the_personas(config_factory, tmp_path):
    out = tmp_path / "ddp"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29531"]
    result = subprocess.run(torchrun + [str(ROOT / "scripts" / "train_lora_per_user.py"), "--config",
                                        str(config_factory("ddp", epochs=1)), "--output_dir", str(out)],
                            capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 0/2: 2 adapter(s)" in result.stdout and "process 1/2: 1 adapter(s)" in result.stdout
    rows = {r["persona_id"]: r["status"] for r in csv.DictReader((out / "training_summary.csv").open())}
    assert rows == {"persona_000": "trained", "persona_001": "trained", "persona_002": "trained"}
    assert not list(out.glob("*.rank*.csv"))
    shutil.rmtree(out)


def test_two_processes_split_the_evaluation(tiny_model_dir, demo_files, tmp_path):
    """Both processes' adapters count in the costs, seeds and memorisation check, not only the main one's."""
    from peft import LoraConfig, get_peft_model

    from adaptcommand.model.adapters import save_adapter
    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, _, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                                adapter_name="x")
    for persona in demo_files["splits"]:
        save_adapter(peft_model, "x", tmp_path / "per_user" / "seed_0" / persona, {"seconds": 1.0, "train_tokens": 10})
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "generation": {"max_new_tokens": 2, "batch_size": 8},
        "evaluation": {"train_sessions": 1, "cloze": False},
        "adapters": {"lora_per_user": str(tmp_path / "per_user")},
        "arms": {"names": ["baseline", "character", "lora_per_user"], "n_bootstrap": 100}}))
    single, double = tmp_path / "one", tmp_path / "two"
    assert run_script("eval_lora.py", "--config", config, "--output_dir", single).returncode == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29532"]
    result = subprocess.run(torchrun + [str(ROOT / "scripts" / "eval_lora.py"), "--config", str(config),
                                        "--output_dir", str(double)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "process 1/2: 1 persona(s)" in result.stdout
    one, two = (json.loads((d / "arm_metrics.json").read_text()) for d in (single, double))
    assert two["processes"] == 2 and two["turns"] == one["turns"]
    for arm in ("baseline", "character", "lora_per_user", "best_on_val"):
        assert two["arms"][arm]["turns"] == one["arms"][arm]["turns"]
        assert two["arms"][arm]["rougeL"] == pytest.approx(one["arms"][arm]["rougeL"])
    assert two["seeds"] == one["seeds"] == {"lora_per_user": [0]}
    costs = [list(csv.DictReader((d / "training_costs.csv").open())) for d in (single, double)]
    assert costs[0][0]["adapters"] == costs[1][0]["adapters"] == str(len(demo_files["splits"]))
    memorization = [list(csv.DictReader((d / "memorization.csv").open())) for d in (single, double)]
    assert memorization[1] == memorization[0] and {r["arm"] for r in memorization[1]} == {"baseline", "lora_per_user"}
    assert not list(double.glob(".records.*"))


def test_a_failed_export_leaves_no_lora_in_the_base_model(tiny_model_dir, tmp_path, monkeypatch):
    from adaptcommand.model import multi_lora
    from adaptcommand.model.adapters import lora_config
    from adaptcommand.model.config import LoraSection
    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, _, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    modules = len(list(model.modules()))
    lora = lora_config(LoraSection(r=4, alpha=8, dropout=0.0))

    def full_disk(*_):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(multi_lora, "save_adapter", full_disk)
    state = {name: (torch.zeros(4, layer.in_features), torch.zeros(layer.out_features, 4))
             for name, layer in model.named_modules() if name.endswith(("q_proj", "v_proj"))}
    with pytest.raises(OSError):
        multi_lora.export_adapters(model, lora, [state], [tmp_path / "a"], [{}])
    assert len(list(model.modules())) == modules and not any("lora" in n for n, _ in model.named_modules())


def test_more_processes_than_gpus_is_refused_in_one_line(monkeypatch):
    from adaptcommand.data.data_io import UserError
    from adaptcommand.model.modeling import distributed_state

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(UserError, match="2 processes on this machine but 1 GPU"):
        distributed_state()
