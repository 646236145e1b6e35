import json
from dataclasses import fields

import torch
from conftest import run_script

from adaptcommand.model.arm_registry import ARMS, LORA, PREFIX, REGISTRY, SCOPES, comparator_pairs
from adaptcommand.model.config import TrainingSection, defaults, validate


def test_every_adapter_arm_has_a_folder_key_a_scope_and_a_peft_name_peft_accepts():
    adapters = {f.name for f in fields(defaults().adapters)}
    for arm in REGISTRY:
        assert (arm.name in adapters) == arm.has_adapters
        assert bool(arm.scope) == arm.has_adapters and (arm.scope is None or SCOPES[arm.scope] is arm)
        if arm.has_adapters:
            name = arm.adapter_name("persona_007", 2)
            assert "." not in name and "lora_" not in name and name.endswith("_s2")
            assert ("persona_007" in name) != arm.unified
        if arm.on_unified:
            assert ARMS[arm.on_unified].unified and ARMS[arm.on_unified].kind == LORA
    assert set(next(f for f in fields(TrainingSection) if f.name == "scope").metadata["choices"]) == set(SCOPES)
    assert len({a.peft_name for a in REGISTRY if a.has_adapters}) == len(SCOPES)


def test_the_comparator_family_follows_the_records():
    assert comparator_pairs(list(ARMS)) == [("lora_per_user_on_all", "lora_all_on_all"), ("lora_all_on_all", "lora_all")]
    assert comparator_pairs(["lora_per_user", "lora_all_on_all"]) == []  # per-user on the base model: not its family
    assert comparator_pairs(["lora_per_user_on_all", "lora_all"]) == []


def _save_random_adapters(model_dir, root):
    """A random adapter of every adapter arm in the registry under root/<arm>: one per persona or one unified."""
    from peft import LoraConfig, PrefixTuningConfig, get_peft_model

    from adaptcommand.model.adapters import save_adapter
    from adaptcommand.model.modeling import load_model_and_tokenizer

    folders = {}
    for k, arm in enumerate(a for a in REGISTRY if a.has_adapters):
        model, _, _ = load_model_and_tokenizer(str(model_dir), device="cpu")
        torch.manual_seed(k)
        config = (PrefixTuningConfig(num_virtual_tokens=3, task_type="CAUSAL_LM") if arm.kind == PREFIX else
                  LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
        peft_model = get_peft_model(model, config, adapter_name="x")
        seed_root = root / arm.name / "seed_0"
        for folder in [seed_root] if arm.unified else [seed_root / p for p in ("persona_000", "persona_001")]:
            save_adapter(peft_model, "x", folder, {"note": "random"})
        folders[arm.name] = str(root / arm.name)
    return folders


def test_every_registered_arm_can_be_named_is_served_and_appears_in_the_tables(tiny_model_dir, demo_files, tmp_path):
    names = [arm.name for arm in REGISTRY]
    config = {
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "generation": {"max_new_tokens": 3, "batch_size": 8}, "evaluation": {"cloze": False},
        "adapters": _save_random_adapters(tiny_model_dir, tmp_path / "models"),
        "arms": {"names": names, "best_on_val": False, "n_bootstrap": 100}}
    assert validate(config, "test").arms.names == names
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(config))
    result = run_script("eval_lora.py", "--config", path, "--output_dir", tmp_path / "out",
                        "--personas", "persona_000,persona_001", "--max_examples", "4")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "arm_metrics.json").read_text())
    assert set(summary["arms"]) == set(names)
    assert {n: summary["arms"][n]["personas"] for n in names} == {n: summary["arms"]["baseline"]["personas"] for n in names}
    assert summary["arms"]["baseline"]["personas"] >= 1
    table = result.stdout[result.stdout.index("| arm"):]
    assert all(f"| {n} " in table for n in names)
    assert all(f"- {a.name}: {a.note}" in result.stdout for a in REGISTRY if a.kind == "policy")
