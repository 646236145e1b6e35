"""Prefix-tuning adapters (prefix_all, prefix_per_user): the training core's prefix path equals PEFT's own
forward, and the prefix scopes train, resume and save standard PEFT folders."""

import json
from dataclasses import replace

import pytest
import torch
from conftest import run_script


# PEFT's own prompt-learning forward (the reference here) still passes the deprecated `past_key_values`
@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")
def test_the_training_cores_prefix_path_equals_pefts_forward(tiny_arch_dir):
    from peft import get_peft_model

    from adaptcommand.model.adapters import prefix_config
    from adaptcommand.model.config import PrefixSection
    from adaptcommand.model.modeling import load_model_and_tokenizer
    from adaptcommand.model.training import IGNORE, _position_losses

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(model, prefix_config(PrefixSection(num_virtual_tokens=5))).eval()
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
        "prefix": {"num_virtual_tokens": 4, "learning_rate": 3e-2},
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
        assert log["prefix"] == {"num_virtual_tokens": 4, "projection": False, "learning_rate": 3e-2} and "lora" not in log
        # the prefix's own learning rate, not LoRA's: the schedule peaks above training.learning_rate
        assert log["training"]["learning_rate"] == 3e-2 and 1e-2 < max(log["step_learning_rate"]) <= 3e-2
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


def _prefix_model(model_dir, names=("a", "b"), dtype="auto"):
    """A PEFT model holding random prefix adapters of these names (prefixes far from zero, so they matter)."""
    from peft import get_peft_model

    from adaptcommand.model.adapters import prefix_config
    from adaptcommand.model.config import PrefixSection
    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(str(model_dir), device="cpu", dtype=dtype)
    torch.manual_seed(0)
    config = prefix_config(PrefixSection(num_virtual_tokens=3))
    peft_model = get_peft_model(model, config, adapter_name=names[0])
    for name in names[1:]:
        peft_model.add_adapter(name, config)
    with torch.no_grad():
        for name in names:
            peft_model.prompt_encoder[name].embedding.weight.normal_(std=1.0)
    return peft_model.eval(), tokenizer


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # PEFT's forward, the reference
def test_prefix_replies_equal_one_at_a_time_generate(tiny_arch_dir):
    """Batched per-adapter replies equal each prompt generated alone; each prompt's first-step logits equal
    PEFT's forward on it (what training optimises), padded or not. PEFT's own generate is not the
    reference: with a prefix it places the prompt at other positions than its forward does (design.md)."""
    from adaptcommand.model.config import defaults
    from adaptcommand.model.generation import (
        encode_prompts,
        generate_texts,
        generation_kwargs,
        padded_batch,
        prefix_generate,
    )

    model, tokenizer = _prefix_model(tiny_arch_dir)
    prompts = [f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
               for text in ("Lights to 40%.", "Set the AC to 22 degrees in heat mode please.", "TV on.", "Warm light.")]
    names = ["a", "b", "b", "a"]
    gen_cfg = replace(defaults().generation, max_new_tokens=6)
    batched = generate_texts(model, tokenizer, prompts, gen_cfg, batch_size=2, adapter_names=names, progress=False)
    kwargs = generation_kwargs(model, tokenizer, gen_cfg)
    alone = []
    for ids, name in zip(encode_prompts(tokenizer, prompts), names):
        model.set_adapter(name)
        with torch.no_grad():
            out = prefix_generate(model, torch.tensor([ids]), torch.ones((1, len(ids)), dtype=torch.long), kwargs)
        alone.append(tokenizer.decode(out[0, 3 + len(ids):], skip_special_tokens=True).strip())
    assert batched == alone

    ids = encode_prompts(tokenizer, prompts[1:3])
    first = {**generation_kwargs(model, tokenizer, replace(gen_cfg, max_new_tokens=1)), "output_logits": True,
             "return_dict_in_generate": True}
    model.set_adapter("b")
    input_ids, attention = padded_batch(tokenizer, ids, "cpu")
    with torch.no_grad():
        together = prefix_generate(model, input_ids, attention, first).logits[0]
        for row in range(2):
            forward = model(input_ids=torch.tensor([ids[row]])).logits[0, -1]
            torch.testing.assert_close(together[row], forward, atol=1e-4, rtol=1e-4)
        model.set_adapter("a")
        other = prefix_generate(model, input_ids, attention, first).logits[0]
    assert not torch.allclose(together, other, atol=1e-3)  # the adapters make a difference


def test_prefix_replies_in_chains_equal_each_prompt_alone(tiny_arch_dir):
    """A dialogue's turns through a prefix adapter: its longest prompt is prefilled once after the prefix and
    each turn decodes from its slice of that cache, with the replies each prompt gets alone."""
    from adaptcommand.model.config import defaults
    from adaptcommand.model.generation import (
        GenerationStats,
        encode_prompts,
        generate_texts,
        generation_kwargs,
        prefix_generate,
    )

    model, tokenizer = _prefix_model(tiny_arch_dir)
    turns = ["Lights to 40%.", "Warmer please.", "And the AC to 22 in heat mode."]
    prompts, history = [], ""
    for text in turns:
        history += f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n"
        prompts.append(history)
        history += "Done.<|im_end|>\n"
    prompts = prompts + prompts[:2]  # the same dialogue through the other adapter: its own chain
    names = ["a", "a", "a", "b", "b"]
    gen_cfg = replace(defaults().generation, max_new_tokens=5)
    stats = GenerationStats()
    chained = generate_texts(model, tokenizer, prompts, gen_cfg, batch_size=2, adapter_names=names, progress=False,
                             chain_keys=[0] * len(prompts), stats=stats)
    ids = encode_prompts(tokenizer, prompts)
    assert stats.prefilled == len(ids[2]) + len(ids[4])  # each adapter's longest prompt once
    kwargs = generation_kwargs(model, tokenizer, gen_cfg)
    alone = []
    for one, name in zip(ids, names):
        model.set_adapter(name)
        with torch.no_grad():
            out = prefix_generate(model, torch.tensor([one]), torch.ones((1, len(one)), dtype=torch.long), kwargs)
        alone.append(tokenizer.decode(out[0, 3 + len(one):], skip_special_tokens=True).strip())
    assert chained == alone


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # PEFT's forward, the reference
def test_prefix_cloze_scores_equal_full_sequence_scores(tiny_arch_dir):
    from adaptcommand.evaluation.cloze import shared_prefix_logprobs

    model, tokenizer = _prefix_model(tiny_arch_dir)
    sequences = [([5, 17, 42, 8, 9], [[3], [4, 11], [6]]), ([5, 17, 42, 8, 9, 30, 31], [[12, 2], [7]])]
    for name in ("a", "b"):
        scores = shared_prefix_logprobs(model, sequences, name)
        model.set_adapter(name)
        for (prefix, tails), got in zip(sequences, scores):
            for tail, score in zip(tails, got):
                with torch.no_grad():
                    logp = torch.log_softmax(model(input_ids=torch.tensor([prefix + tail])).logits[0].float(), dim=-1)
                full = sum(float(logp[len(prefix) + j - 1, tok]) for j, tok in enumerate(tail))
                assert score == pytest.approx(full, abs=1e-4)
    assert shared_prefix_logprobs(model, sequences, "a") != \
        shared_prefix_logprobs(model, sequences, "b")


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # PEFT's generate
def test_eval_compares_prefix_arms_and_skips_unusable_ones(tiny_model_dir, demo_files, tmp_path):
    import csv

    from adaptcommand.model.adapters import save_adapter

    model, _ = _prefix_model(tiny_model_dir, names=("x",))
    models = tmp_path / "models"
    save_adapter(model, "x", models / "prefix_all" / "seed_0", {"note": "random"})
    for persona in ("persona_000", "persona_001", "persona_002"):
        save_adapter(model, "x", models / "prefix_per_user" / "seed_0" / persona, {"note": "random"})
    broken = models / "prefix_per_user" / "seed_0" / "persona_002" / "adapter_config.json"
    broken.write_text(broken.read_text().replace('"num_layers": 2', '"num_layers": 12'))  # another base model
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "generation": {"max_new_tokens": 3, "batch_size": 8},
        "adapters": {"prefix_all": str(models / "prefix_all"), "prefix_per_user": str(models / "prefix_per_user")},
        "arms": {"names": ["oracle", "baseline", "prefix_all", "prefix_per_user"], "n_bootstrap": 100}}))
    out = tmp_path / "results"
    result = run_script("eval_lora.py", "--config", config, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    assert "prefix_per_user: unusable adapter" in result.stdout and "another base model" in result.stdout
    summary = json.loads((out / "arm_metrics.json").read_text())
    arms = summary["arms"]
    assert arms["prefix_all"]["personas"] == 3 and arms["prefix_per_user"]["personas"] == 2
    assert arms["prefix_all"]["cloze_top1"] is not None and arms["prefix_per_user"]["cloze_top1"] is not None
    assert set(summary["best_on_val_choice"].values()) <= {"baseline", "prefix_all", "prefix_per_user"}
    compared = {(r["arm"], r["ref"]) for r in csv.DictReader((out / "comparison.csv").open()) if r["metric"] == "routine_f1"}
    assert {("prefix_all", "baseline"), ("prefix_per_user", "baseline"), ("best_on_val", "baseline")} <= compared
    replies = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert {r["arm"] for r in replies} >= {"prefix_all", "prefix_per_user"}


@pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")  # PEFT's forward, the reference
def test_prefix_generation_in_bfloat16_follows_the_forward(tiny_arch_dir):
    """The prefix path in bfloat16 (the GPU's dtype): replies come out, and each prompt's first-step logits
    are PEFT's forward on it, within bfloat16's rounding."""
    from adaptcommand.model.config import defaults
    from adaptcommand.model.generation import encode_prompts, generate_texts, generation_kwargs, padded_batch, prefix_generate

    model, tokenizer = _prefix_model(tiny_arch_dir, dtype="bfloat16")
    assert model.get_base_model().dtype == torch.bfloat16
    prompts = [f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n" for text in ("Lights to 40%.", "TV on.")]
    gen_cfg = replace(defaults().generation, max_new_tokens=4)
    replies = generate_texts(model, tokenizer, prompts, gen_cfg, batch_size=2, adapter_names=["a", "b"], progress=False)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)
    first = {**generation_kwargs(model, tokenizer, replace(gen_cfg, max_new_tokens=1)), "output_logits": True,
             "return_dict_in_generate": True}
    model.set_adapter("a")
    ids = encode_prompts(tokenizer, prompts)
    input_ids, attention = padded_batch(tokenizer, ids, "cpu")
    with torch.no_grad():
        together = prefix_generate(model, input_ids, attention, first).logits[0].float()
        for row in range(2):
            forward = model(input_ids=torch.tensor([ids[row]])).logits[0, -1].float()
            torch.testing.assert_close(together[row], forward, atol=6e-2, rtol=2e-2)
