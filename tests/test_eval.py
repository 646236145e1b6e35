import csv
import json
import re
from dataclasses import replace

import pytest
import torch
from conftest import run_script

from adaptcommand.evaluation.action_metrics import ActionMetrics
from adaptcommand.evaluation.arms import best_on_val
from adaptcommand.evaluation.evaluation import TEXT_METRICS
from adaptcommand.model.config import defaults
from adaptcommand.model.generation import encode_prompts, generation_kwargs, padded_batch
from adaptcommand.model.prompting import build_turn_messages, render_prompt


# ------------------------------------------------------------ mixed-adapter batches
def _random_adapter(model, name, seed):
    from peft import LoraConfig

    torch.manual_seed(seed)
    model.add_adapter(name, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))


def test_mixed_adapter_batch_equals_one_adapter_at_a_time(tiny_arch_dir):
    from peft import LoraConfig, get_peft_model

    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False), adapter_name="p1")
    _random_adapter(peft_model, "p2", seed=2)
    peft_model.eval()
    cfg = replace(defaults().prompt, system_template="S")
    dialog = {"messages": [{"role": "user", "text": "Lights to 40%, please."}, {"role": "assistant", "text": "Done."},
                           {"role": "user", "text": "And the TV volume to 12."}]}
    prompts = [render_prompt(tokenizer, build_turn_messages(dialog, t, cfg)) for t in (1, 3, 3)]
    ids = encode_prompts(tokenizer, prompts)
    kwargs = {**generation_kwargs(model, tokenizer, replace(defaults().generation, max_new_tokens=2)),
              "output_logits": True, "return_dict_in_generate": True}

    def logits(id_lists, names):
        input_ids, attention = padded_batch(tokenizer, id_lists, "cpu")
        with torch.no_grad():
            out = peft_model.generate(input_ids=input_ids, attention_mask=attention, adapter_names=names, **kwargs)
        return out.logits[0]

    mixed = logits(ids, ["p1", "p2", "__base__"])
    for row, name in enumerate(["p1", "p2", "__base__"]):
        alone = logits([ids[row]], [name])
        torch.testing.assert_close(mixed[row], alone[0], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits([ids[1]], ["p1"]), logits([ids[1]], ["p2"]))  # the adapters differ


# ------------------------------------------------------------ the script end to end
def test_best_on_val_falls_back_to_the_best_arm_overall_without_val_evidence():
    def record(persona, hits, n=2):  # one routine-driven turn with n testable settings, `hits` stated right
        keys = [f"lights.p{i}" for i in range(n)]
        return {"persona_id": persona, "dialog_index": 0, "turn_index": 1, **{k: 0.0 for k in TEXT_METRICS},
                "action_counts": ActionMetrics.compare_actions({}, {}),
                "knowledge": {"routine_testable": keys, "routine_hits": keys[:hits], "routine_wrongs": []}}
    val = {"a": [record("p1", 2), record("p2", 0)], "b": [record("p1", 0), record("p2", 1)]}
    test = {arm: [record(p, 1) for p in ("p1", "p2", "p3")] for arm in ("a", "b")}
    choice, records = best_on_val(val, test, "routine_f1", ["a", "b"])
    # p1: a (F1 1.0 vs 0); p2: b (0.67 vs 0); p3 has no val turns: the best mean over personas, a (0.5 vs 0.33)
    assert choice == {"p1": "a", "p2": "b", "p3": "a"}
    assert len(records) == 3


def _shift_lora_b(peft_model, by):
    """Other adapter weights from the same PEFT model: every LoRA B matrix shifted by `by`."""
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.add_(by)


def test_eval_cli_reports_missing_adapters_and_writes_outputs(tiny_model_dir, demo_files, tmp_path):
    from peft import LoraConfig, get_peft_model

    from adaptcommand.model.adapters import save_adapter
    from adaptcommand.model.modeling import load_model_and_tokenizer

    models = tmp_path / "models"
    model, _, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                                adapter_name="x")
    cost = {"seconds": 10.0, "train_tokens": 500, "optimizer_steps": 5, "floor_tokens_per_second": 100.0, "device": "cpu x"}
    save_adapter(peft_model, "x", models / "lora_all" / "seed_0", {"note": "random", **cost})
    for persona in ("persona_000", "persona_001"):  # persona_002 has no per-user adapter
        save_adapter(peft_model, "x", models / "per_user" / "seed_0" / persona, {"note": "random"})
        save_adapter(peft_model, "x", models / "on_all" / "seed_0" / persona, {"note": "random"})
    _shift_lora_b(peft_model, 0.5)  # a second training seed of one persona's adapter, with other weights
    save_adapter(peft_model, "x", models / "per_user" / "seed_1" / "persona_000", {"note": "random"})
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "generation": {"max_new_tokens": 3, "batch_size": 8}, "evaluation": {"train_sessions": 1},
        "adapters": {"lora_all": str(models / "lora_all"), "lora_per_user": str(models / "per_user"),
                     "lora_per_user_on_all": str(models / "on_all")},
        "arms": {"n_bootstrap": 200}}))
    out = tmp_path / "results"
    result = run_script("eval_lora.py", "--config", config, "--output_dir", out)
    assert result.returncode == 0, result.stderr
    assert "lora_per_user: no adapter for 1 of 3 personas (persona_002)" in result.stdout
    summary = json.loads((out / "arm_metrics.json").read_text())
    assert summary["missing_adapters"] == {"lora_per_user": ["persona_002"], "lora_per_user_on_all": ["persona_002"]}
    arms = summary["arms"]
    assert set(arms) == {"echo", "oracle", "baseline", "character", "retrieval", "lora_all", "lora_per_user",
                         "lora_per_user_on_all", "best_on_val"}
    assert arms["oracle"]["macro_routine_f1"] >= 0.9 and arms["echo"]["macro_routine_f1"] <= 0.05
    assert set(summary["best_on_val_choice"].values()) <= {"baseline", "character", "retrieval", "lora_all",
                                                           "lora_per_user", "lora_per_user_on_all"}
    assert arms["lora_per_user"]["personas"] == 2 and arms["baseline"]["personas"] == 3
    assert arms["baseline"]["turns"] == summary["turns"]
    assert set(summary["best_on_val_choice"]) == {"persona_000", "persona_001", "persona_002"}
    assert summary["seeds"] == {"lora_all": [0], "lora_per_user": [0, 1], "lora_per_user_on_all": [0]}
    assert arms["lora_per_user"]["seeds"] == 2 and arms["baseline"]["seeds"] == 0
    rows = list(csv.DictReader((out / "per_persona.csv").open()))
    assert {(r["persona_id"], r["arm"]) for r in rows} >= {("persona_002", "baseline"), ("persona_000", "lora_per_user")}
    assert ("persona_002", "lora_per_user") not in {(r["persona_id"], r["arm"]) for r in rows}
    assert "delta_vs_baseline_param_f1" in rows[0] and "delta_vs_retrieval_embedding_similarity" in rows[0]
    assert "delta_vs_lora_all_routine_f1" in rows[0] and "param_private_f1" in rows[0]
    assert not [c for c in rows[0] if c.endswith(("_x", "_y"))]  # the primary metric is also secondary: one column
    # a persona's score is the mean over its seeds
    seed_rows = list(csv.DictReader((out / "per_persona_seed.csv").open()))
    mine = [float(r["rougeL"]) for r in seed_rows if (r["persona_id"], r["arm"]) == ("persona_000", "lora_per_user")]
    row = next(r for r in rows if (r["persona_id"], r["arm"]) == ("persona_000", "lora_per_user"))
    assert len(mine) == 2 and float(row["rougeL"]) == pytest.approx(sum(mine) / 2) and row["seeds"] == "2"
    # the preference cloze: every model arm, none of the reference policies
    cloze = {r["arm"]: r["cloze_top1"] for r in rows if r["persona_id"] == "persona_000"}
    assert cloze["echo"] == "" and 0 <= float(cloze["baseline"]) <= 1 and float(cloze["lora_per_user"]) >= 0
    assert 0 < arms["baseline"]["cloze_chance"] < 1 and arms["lora_all"]["cloze_top1"] is not None
    # each cloze item on its own: what the arm ranked first beside the user's value, the top-1 its mean
    items = list(csv.DictReader((out / "cloze_items.csv").open()))
    assert {r["arm"] for r in items} == {"baseline", "character", "retrieval", "lora_all", "lora_per_user",
                                        "lora_per_user_on_all"}
    assert all((r["picked"] == r["answer"]) == (r["correct"] == "True") and r["answer"] for r in items)
    fresh = [r["correct"] == "True" for r in items
             if (r["persona_id"], r["arm"], r["in_context"]) == ("persona_000", "baseline", "False")]
    assert fresh and sum(fresh) / len(fresh) == pytest.approx(float(cloze["baseline"]))
    # every model arm against baseline, lora_all and retrieval; the primary metric's family has verdicts
    comparison = list(csv.DictReader((out / "comparison.csv").open()))
    primary = [r for r in comparison if r["metric"] == "routine_f1"]
    assert {(r["arm"], r["ref"]) for r in primary} >= {("lora_per_user", "baseline"), ("lora_per_user", "lora_all"),
                                                        ("lora_per_user", "retrieval"), ("lora_all", "baseline")}
    # each pair of reference arms once: no mirrored comparison in the Holm family
    pairs = [(r["arm"], r["ref"]) for r in primary]
    assert len(pairs) == len(set(pairs)) and not {(b, a) for a, b in pairs} & set(pairs)
    assert not {r["arm"] for r in comparison} & {"echo", "oracle"}
    assert {r["verdict"] for r in primary} == {"too few personas"}  # 3 personas, fewer than 10
    assert all(r["verdict"] == "" and r["holm_p"] == "" for r in comparison if r["metric"] != "routine_f1")
    assert (out / "arm_metrics_pooled.csv").is_file()
    lines = (out / "comparison.md").read_text().splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines if line.startswith("|")]
    assert cells[0][:5] == ["arm", "personas", "seeds", "routine_f1 [95% CI]", "seed SD"]
    assert any(line.startswith("- echo: repeats the user's last message") for line in lines)
    assert ["lora_per_user", "2", "2"] in [row[:3] for row in cells]
    assert any(row[-1] == "too few personas" for row in cells)
    for png in ("delta_histograms.png", "arm_comparison.png", "per_user_vs_unified.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    # what each arm cost to train, from the train logs, and the time breakdown of the run
    costs = {(r["arm"], r["seed"]): r for r in csv.DictReader((out / "training_costs.csv").open())}
    unified = costs[("lora_all", "0")]
    assert (unified["adapters"], float(unified["tokens_per_second"]), unified["device"]) == ("1", 50.0, "cpu x")
    assert float(unified["adapter_mb"]) > 0 and costs[("lora_per_user", "0")]["adapters"] == "2"
    assert costs[("lora_per_user", "0")]["device"] == "unrecorded" and ("lora_per_user", "1") in costs
    assert "| training lora_all seed 0 (1 adapter) | 10 | 500 | 50 | 100 |" in result.stdout
    assert set(summary["stage_seconds"]) >= {"load data and models", "replies and scores, test", "cloze", "statistics",
                                             "memorization (train sessions)"}
    # memorisation: baseline and the adapter arms on each persona's last train session, beside test
    memo = {(r["arm"], r["split"]): r for r in csv.DictReader((out / "memorization.csv").open())}
    assert set(memo) == {(a, s) for a in ("baseline", "lora_all", "lora_per_user", "lora_per_user_on_all")
                         for s in ("train", "test")}
    assert float(memo[("baseline", "test")]["routine_f1"]) == pytest.approx(arms["baseline"]["routine_f1"])
    assert memo[("lora_per_user", "train")]["personas"] == "2" and memo[("lora_all", "train")]["cloze_top1"] != ""
    # the train sample is each persona's last routine-driven session: every persona has turns and cloze items there
    assert int(memo[("baseline", "train")]["turns"]) > 0 and int(memo[("baseline", "train")]["cloze_items"]) > 0
    assert memo[("baseline", "train")]["personas"] == "3" and int(memo[("baseline", "test")]["cloze_items"]) > 0

    # the analysis report, from these files only (the same evaluation twice as a two-point learning curve)
    result = run_script("analyze_results.py", "--results", out, "--curve", f"4={out}", f"2={out}", "--label", "synthetic")
    assert result.returncode == 0, result.stderr
    report = (out / "analysis.md").read_text()
    for heading in ("# Analysis: synthetic", "## Who benefits", "## Compute against gain", "## The cloze item by item",
                    "## Memorisation", "## Learning curve", "## Time"):
        assert heading in report
    assert "| lora_per_user_on_all - lora_all | habit_gap |" in re.sub(" +", " ", report)
    assert "The same for cloze top-1, a secondary metric" in report  # its MDE projected from its own SD
    for png in ("who_benefits_routine_f1.png", "compute_vs_gain.png", "learning_curve.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    result = run_script("analyze_results.py", "--results", out, "--curve", "two=x")
    assert result.returncode == 2 and "--curve 'two=x': expected N=FOLDER" in result.stderr


def test_reference_policies_need_no_chat_model(demo_files, tmp_path):
    config = tmp_path / "policies.json"
    config.write_text(json.dumps({
        "model": {"name": str(tmp_path / "no_such_model")},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "arms": {"names": ["silent", "echo", "oracle"], "n_bootstrap": 200}}))
    result = run_script("eval_lora.py", "--config", config, "--output_dir", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    arms = json.loads((tmp_path / "out" / "arm_metrics.json").read_text())["arms"]
    assert arms["silent"]["macro_routine_f1"] == 0.0 and arms["silent"]["param_f1"] == 0.0
    assert arms["oracle"]["macro_routine_f1"] >= 0.9 and arms["echo"]["param_f1"] > 0.5


def test_a_small_policy_and_prompt_run_never_crashes_in_the_tables(tiny_model_dir, demo_files, tmp_path):
    """The metric-integrity issue's crash: a few turns with no private values left a column undefined."""
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "generation": {"max_new_tokens": 3, "batch_size": 8}, "evaluation": {"cloze": False},
        "arms": {"names": ["baseline", "retrieval", "echo", "oracle"], "best_on_val": False, "n_bootstrap": 100}}))
    result = run_script("eval_lora.py", "--config", config, "--output_dir", tmp_path / "out",
                        "--personas", "persona_000,persona_001", "--max_examples", "6")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "out" / "arm_metrics.json").read_text())
    assert summary["turns"] == 6 and set(summary["arms"]) == {"baseline", "retrieval", "echo", "oracle"}


def test_the_more_training_comparator_is_served_on_the_unified_adapter_in_a_family_of_its_own(
        tiny_model_dir, demo_files, tmp_path):
    """lora_all_on_all sits on the merged unified adapter like per-user-on-unified adapters, and is compared
    only in its own family: per-user-on-unified against it, it against lora_all (design.md, Decision rules)."""
    from peft import LoraConfig, get_peft_model

    from adaptcommand.model.adapters import save_adapter
    from adaptcommand.model.modeling import load_model_and_tokenizer

    models = tmp_path / "models"
    model, _, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    torch.manual_seed(0)
    peft_model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                                adapter_name="x")
    for folder in ([models / "lora_all" / "seed_0", models / "all_on_all" / "seed_0"]
                   + [models / "on_all" / "seed_0" / p for p in ("persona_000", "persona_001")]):
        save_adapter(peft_model, "x", folder, {"note": "random"})
        _shift_lora_b(peft_model, 0.3)  # each adapter its own weights
    arms = ["baseline", "lora_all", "lora_per_user_on_all", "lora_all_on_all"]
    config = tmp_path / "eval.json"
    config.write_text(json.dumps({
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "generation": {"max_new_tokens": 3, "batch_size": 8}, "evaluation": {"cloze": False},
        "adapters": {"lora_all": str(models / "lora_all"), "lora_per_user_on_all": str(models / "on_all"),
                     "lora_all_on_all": str(models / "all_on_all")},
        "arms": {"names": arms, "best_on_val": False, "n_bootstrap": 100}}))
    out = tmp_path / "out"
    result = run_script("eval_lora.py", "--config", config, "--output_dir", out, "--max_examples", "6")
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "arm_metrics.json").read_text())
    assert set(summary["arms"]) == set(arms)
    assert summary["arms"]["lora_all_on_all"]["personas"] == summary["arms"]["baseline"]["personas"] > 0
    assert summary["seeds"]["lora_all_on_all"] == [0]
    primary = [r for r in csv.DictReader((out / "comparison.csv").open()) if r["metric"] == "routine_f1"]
    pairs = {(r["arm"], r["ref"]) for r in primary}
    assert {("lora_per_user_on_all", "lora_all_on_all"), ("lora_all_on_all", "lora_all"),
            ("lora_per_user_on_all", "lora_all"), ("lora_all", "baseline")} <= pairs
    assert ("lora_per_user_on_all", "baseline") in pairs and ("lora_all_on_all", "baseline") not in pairs
    # without a usable unified adapter the comparator cannot be served, like per-user-on-unified adapters
    (models / "lora_all" / "seed_0" / "adapter_model.safetensors").write_bytes(b"not weights")
    result = run_script("eval_lora.py", "--config", config, "--output_dir", tmp_path / "out2", "--max_examples", "6")
    assert result.returncode == 1 and "no usable adapter at all for lora_all, lora_per_user_on_all, lora_all_on_all" \
        in result.stderr
    assert re.search(r"lora_all_on_all: unusable adapter \S*all_on_all/seed_0: its unified adapter", result.stdout)
    summary = json.loads((tmp_path / "out2" / "arm_metrics.json").read_text())
    assert set(summary["arms"]) == {"baseline"}
