"""Prefix-tuning adapters (prefix_all, prefix_per_user): the training core's prefix path equals PEFT's own
forward, and the prefix scopes train, resume and save standard PEFT folders."""

import json

import pytest
import torch
from conftest import run_script


# PEFT's own prompt-learning forward (the reference here) still passes the deprecated `past_key_values`
@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
def test_the_training_cores_prefix_path_equals_pefts_forward(tiny_arch_dir):
    from peft import get_peft_model

    from adaptcommand.model.adapters import prefix_config
    from adaptcommand.model.modeling import load_model_and_tokenizer
    from adaptcommand.model.training import IGNORE, _position_losses

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(model, prefix_config({"num_virtual_tokens": 5, "projection": False})).eval()
    with torch.no_grad():  # a prefix that is not all zeros, so that it matters
        peft_model.prompt_encoder["default"].embedding.weight.normal_(std=0.5)
    input_ids = torch.tensor([[5, 17, 42, 8, 99, 3, 61], [7, 7, 20, 31, 4, 0, 0]])
    attention = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])
    targets = input_ids[:, 1:].masked_fill(attention[:, 1:] == 0, IGNORE)
    keep = targets != IGNORE
    with torch.no_grad():
        ours, rows = _position_losses(peft_model, input_ids, attention, targets, keep)
        logits = peft_model(input_ids=input_ids, attention_mask=attention).logits[:, :-1][keep].float()
        reference = torch.nn.functional.cross_entropy(logits, targets[keep], reduction="none")
        plain = model(input_ids=input_ids, attention_mask=attention).logits[:, :-1][keep].float()
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits, plain, atol=1e-3)  # the prefix changes the model's predictions


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # PEFT's forward, below
@pytest.mark.parametrize("scope", ["prefix_per_user", "prefix_all"])
def test_prefix_scopes_train_resume_and_load(scope, tiny_model_dir, demo_files, tmp_path):
    from peft import PeftModel

    from adaptcommand.model.modeling import load_model_and_tokenizer

    config = tmp_path / "train.json"
    config.write_text(json.dumps({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "prompt": {"system_template": "You are a home assistant."},
        "prefix": {"num_virtual_tokens": 4},
        "training": {"epochs": 2, "batch_size": 2, "learning_rate": 1e-2, "max_seq_length": 512,
                     "select_by": "val_knowledge", "parallel_personas": 4, "seeds": [0]},
        "adapters": {scope: str(tmp_path / scope)}}))
    args = ("--config", config, "--scope", scope, "--personas", "persona_000,persona_001")
    result = run_script("train_lora_per_user.py", *args)
    assert result.returncode == 0, result.stderr
    folders = ([tmp_path / scope / "seed_0"] if scope == "prefix_all"
               else [tmp_path / scope / "seed_0" / p for p in ("persona_000", "persona_001")])
    for folder in folders:
        log = json.loads((folder / "train_log.json").read_text())
        assert log["scope"] == scope and log["select_by"] == "val_knowledge" and len(log["epochs"]) == 2
        assert log["prefix"] == {"num_virtual_tokens": 4, "projection": False} and "lora" not in log
        assert log["optimizer_steps"] == len(log["step_train_loss"]) > 0 and (folder / "tensorboard").is_dir()
        assert json.loads((folder / "adapter_config.json").read_text())["peft_type"] == "PREFIX_TUNING"
    # a standard PEFT folder: PeftModel.from_pretrained loads it and its prefix changes the logits
    model, _, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    ids = torch.tensor([[5, 17, 42, 8]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        loaded = PeftModel.from_pretrained(model, str(folders[0])).eval()
        assert not torch.allclose(loaded(input_ids=ids).logits, plain, atol=1e-4)
    # a rerun skips the finished adapters (prefix scopes train one by one, parallel_personas aside)
    result = run_script("train_lora_per_user.py", *args)
    assert result.returncode == 0 and f"{len(folders)} already complete" in result.stdout
