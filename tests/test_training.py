import csv
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from conftest import ROOT, run_script
from safetensors.torch import load_file

from adaptcommand.model.config import PromptSection, TrainingSection, defaults, with_values
from adaptcommand.model.prompting import chat_messages
from adaptcommand.model.training import (
    IGNORE,
    BestEpoch,
    ValScore,
    dialog_example,
    lr_factor,
    supervised_sequence,
    truncated_count,
)

MESSAGES = [{"role": "user", "text": "Turn on the lights."}, {"role": "assistant", "text": "Lights on at 50%."},
            {"role": "user", "text": "Thanks!"}, {"role": "assistant", "text": "You're welcome."}]


# ------------------------------------------------------------ loss masking
def _supervised_spans(tokenizer, ids, labels):
    """The contiguous supervised spans, decoded."""
    supervised = [i for i, label in enumerate(labels) if label != IGNORE]
    assert all(labels[i] == ids[i] for i in supervised)
    spans, current = [], [supervised[0]]
    for i in supervised[1:]:
        if i == current[-1] + 1:
            current.append(i)
        else:
            spans.append(current)
            current = [i]
    spans.append(current)
    return [tokenizer.decode([ids[i] for i in span]) for span in spans]


def test_labels_are_exactly_the_assistant_tokens(tiny_model):
    _, tokenizer = tiny_model
    ids, labels = supervised_sequence(tokenizer, chat_messages("SYS", MESSAGES))
    text = tokenizer.apply_chat_template(chat_messages("SYS", MESSAGES), tokenize=False)
    assert tokenizer.decode(ids) == text
    # the assistant messages, each with its end-of-turn token
    assert _supervised_spans(tokenizer, ids, labels) == ["Lights on at 50%.<|im_end|>", "You're welcome.<|im_end|>"]
    # and token by token, everything else (system, user turns, role headers) is masked
    unsupervised = tokenizer.decode([t for t, label in zip(ids, labels) if label == IGNORE])
    assert unsupervised == text.replace("Lights on at 50%.<|im_end|>", "").replace("You're welcome.<|im_end|>", "")


def test_loss_on_all_supervises_the_user_turns_too(tiny_model):
    _, tokenizer = tiny_model
    cfg = replace(defaults().prompt, system_template="SYS")
    example = dialog_example(tokenizer, {"messages": MESSAGES}, cfg, 512, loss_on="all")
    assert _supervised_spans(tokenizer, example["input_ids"], example["labels"]) == [
        "Turn on the lights.<|im_end|>", "Lights on at 50%.<|im_end|>", "Thanks!<|im_end|>", "You're welcome.<|im_end|>"]
    assistant_only = dialog_example(tokenizer, {"messages": MESSAGES}, cfg, 512)
    assert assistant_only["input_ids"] == example["input_ids"] and assistant_only["labels"] != example["labels"]


def test_long_dialogues_keep_the_most_recent_turns(tiny_model):
    _, tokenizer = tiny_model
    cfg = replace(defaults().prompt, system_template="SYS")
    dialog = {"messages": MESSAGES * 6}
    full = dialog_example(tokenizer, dialog, cfg, max_seq_length=10_000)
    short = dialog_example(tokenizer, dialog, cfg, max_seq_length=len(full["input_ids"]) // 2)
    assert len(short["input_ids"]) <= len(full["input_ids"]) // 2
    assert short["input_ids"][-20:] == full["input_ids"][-20:]  # the end of the dialogue is kept
    assert tokenizer.decode(short["input_ids"]).startswith("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user")
    assert not short["truncated"] and not full["truncated"]


def test_the_last_resort_cut_keeps_the_system_prompt_and_is_counted(tiny_model):
    _, tokenizer = tiny_model
    cfg = replace(defaults().prompt, system_template="SYS " * 30)
    long_user = {"role": "user", "text": "Please set the lights to 40% " * 40}
    dialog = {"messages": [long_user, {"role": "assistant", "text": "Lights at 40%."}]}
    full = dialog_example(tokenizer, dialog, cfg, max_seq_length=10_000)
    cut = dialog_example(tokenizer, dialog, cfg, max_seq_length=120)
    assert cut["truncated"] and len(cut["input_ids"]) == 120
    system = tokenizer(tokenizer.apply_chat_template([{"role": "system", "content": "SYS " * 30}], tokenize=False),
                       add_special_tokens=False)["input_ids"]
    assert cut["input_ids"][:len(system)] == system  # the system prompt whole, then the end of the dialogue
    assert cut["input_ids"][-20:] == full["input_ids"][-20:] and cut["labels"][-20:] == full["labels"][-20:]
    assert truncated_count([cut, full, cut]) == 2


# ------------------------------------------------------------ the script
@pytest.fixture()
def train_config(tmp_path, tiny_arch_dir, demo_files):
    def make(**training):
        cfg = {"model": {"name": str(tiny_arch_dir), "device": "cpu"},
               "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
               "prompt": {"system_template": "You are a home assistant."},
               "lora": {"r": 4, "alpha": 8, "dropout": 0.1, "target_modules": ["q_proj", "v_proj"]},
               "training": {"epochs": 2, "batch_size": 2, "learning_rate": 1e-2, "max_seq_length": 512, **training},
               "adapters": {"lora_all": str(tmp_path / "lora_all"), "lora_per_user": str(tmp_path / "per_user"),
                            "lora_per_user_on_all": str(tmp_path / "on_all"),
                            "lora_all_on_all": str(tmp_path / "all_on_all")}}
        path = tmp_path / f"train_{len(list(tmp_path.glob('train_*.json')))}.json"
        path.write_text(json.dumps(cfg))
        return path
    return make


def _weights(folder):
    return load_file(str(folder / "adapter_model.safetensors"))


VAL = [ValScore(0.9, -3.0), ValScore(0.5, -2.5), ValScore(0.7, -1.0), ValScore(0.8, -1.2)]


@pytest.mark.parametrize("select_by,best", [("val_loss", 2), ("val_knowledge", 3), ("last", 4)])
def test_kept_epoch_follows_select_by(select_by, best):
    tracker = BestEpoch(patience=5, n_train=3, n_val=1, select_by=select_by)
    for epoch, val in enumerate(VAL, start=1):
        assert not tracker.end_epoch(1.0, 1, val, lambda epoch=epoch: {"weights": epoch})
    log = tracker.finish()
    assert log["best_epoch"] == best and tracker.state == {"weights": best}
    assert (log["best_val_loss"], log["best_val_knowledge"]) == (VAL[best - 1].loss, VAL[best - 1].knowledge)
    assert [e["val_knowledge"] for e in log["epochs"]] == [v.knowledge for v in VAL]


def test_an_undefined_knowledge_score_keeps_the_last_epoch_and_patience_stops():
    tracker = BestEpoch(patience=5, n_train=3, n_val=1, select_by="val_knowledge")
    for epoch in (1, 2):
        tracker.end_epoch(1.0, 1, ValScore(0.5, None), lambda epoch=epoch: epoch)
    assert tracker.finish()["best_epoch"] == 2
    tracker = BestEpoch(patience=1, n_train=3, n_val=1, select_by="val_knowledge")
    stops = [tracker.end_epoch(1.0, 1, ValScore(0.5, k), lambda: None) for k in (-1.0, -2.0, -3.0)]
    assert stops == [False, False, True]  # two epochs in a row without improvement: stop


def test_every_kept_epoch_ends_a_decayed_schedule():
    """Selected on validation: each epoch warms up and decays to 0; kept last: one schedule over all epochs."""
    cfg = TrainingSection(warmup_ratio=0.1, epochs=3, select_by="val_knowledge")
    factor = lr_factor(cfg, steps_per_epoch=10)
    per_epoch = [factor(step) for step in range(30)]
    assert per_epoch[:10] == per_epoch[10:20] == per_epoch[20:]  # the same cycle every epoch
    assert per_epoch[1] == 1.0 and per_epoch[9] == pytest.approx(1 / 9)  # warmup 1 step, then down to 0 at the end
    whole = [lr_factor(replace(cfg, select_by="last"), 10)(step) for step in range(30)]
    assert whole[3] == 1.0 and whole[10] > 0.5 and whole[29] == pytest.approx(1 / 27)


def test_max_train_sessions_keeps_each_personas_first_sessions_in_recorded_order(tmp_path):
    from adaptcommand.model.adapters import jobs_for

    splits = {"a": {"train": [7, 2, 5, 9], "val": [11]}, "b": {"train": [3, 1], "val": [12, 13]}}
    per_user = jobs_for("lora_per_user", splits, ["a", "b"], tmp_path, [0], max_sessions=3)
    assert [(j.name, j.train, j.val) for j in per_user] == [("a", [2, 5, 7], [11]), ("b", [1, 3], [12, 13])]
    (unified,) = jobs_for("lora_all", splits, ["a", "b"], tmp_path, [0], max_sessions=1)
    assert (unified.train, unified.val) == ([2, 1], [11, 12, 13])
    assert jobs_for("lora_per_user", splits, ["a"], tmp_path, [0])[0].train == [2, 5, 7, 9]


def test_value_positions_are_the_tokens_of_the_stated_values(tiny_model):
    from adaptcommand.evaluation.action_metrics import ActionExtractor
    from adaptcommand.evaluation.cloze import first_value_spans
    from adaptcommand.evaluation.routine_knowledge import message_actions

    _, tokenizer = tiny_model
    dialog = {"meta": {"time_of_day": "evening"}, "applied_routines": [0],
              "routines": [{"triggers": {"time_of_day": "evening"}, "actions": {"lights": {"brightness": 35, "color": "warm"}}}],
              "messages": [{"role": "user", "text": "Set the lights to 35 please."},
                           {"role": "assistant", "text": "Lights at 35, warm color?"},
                           {"role": "user", "text": "Yes, warm."}, {"role": "assistant", "text": "Done."}]}
    spans = first_value_spans(dialog, message_actions(dialog, ActionExtractor().extract_actions))
    assert spans == [(0, 18, 20), (1, 14, 18)]  # "35" said first by the user, "warm" first by the assistant
    example = dialog_example(tokenizer, dialog, PromptSection(system_template="S"), 512, spans=spans)
    stated = "".join(tokenizer.decode([example["input_ids"][i]]) for i in example["value_positions"])
    assert stated.replace(" ", "") == "35warm"


def test_per_user_adapters_resume_and_determinism(train_config, tmp_path):
    root = tmp_path / "per_user"
    out = root / "seed_0"
    config = train_config()
    result = run_script("train_lora_per_user.py", "--config", config, "--max_personas", 2, "--output_dir", root)
    assert result.returncode == 0, result.stderr
    first = {p: _weights(out / p) for p in ("persona_000", "persona_001")}
    log = json.loads((out / "persona_000" / "train_log.json").read_text())
    assert log["best_epoch"] in (1, 2) and len(log["epochs"]) == 2 and log["train_tokens"] > 0
    assert log["optimizer_steps"] == 2 * -(-log["train_examples"] // 2)  # 2 epochs of batches of 2
    assert log["floor_tokens_per_second"] > 0 and log["device"].endswith("threads)")
    assert log["truncated_examples"] == 0  # max_seq_length 512 fits every demo dialogue
    # the training curves as TensorBoard event files beside the log, read back
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "persona_000" / "tensorboard"))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= {"train/loss", "train/learning_rate", "val/loss"}
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == list(range(1, log["optimizer_steps"] + 1))
    assert [e.value for e in losses] == pytest.approx(log["step_train_loss"], rel=1e-6)
    val = events.Scalars("val/loss")
    assert [e.step for e in val] == [e["optimizer_steps"] for e in log["epochs"]]
    assert [e.value for e in val] == pytest.approx([e["val_loss"] for e in log["epochs"]], rel=1e-6)
    lrs = [e.value for e in events.Scalars("train/learning_rate")]
    assert max(lrs) == pytest.approx(1e-2, rel=0.2) and lrs[-1] < lrs[len(lrs) // 2]  # warmup, then decay
    adapter_cfg = json.loads((out / "persona_000" / "adapter_config.json").read_text())
    assert adapter_cfg["r"] == 4 and adapter_cfg["base_model_name_or_path"] == json.loads(config.read_text())["model"]["name"]
    rows = list(csv.DictReader((root / "training_summary.csv").open()))
    assert [(r["status"], r["seed"], r["truncated_examples"]) for r in rows] == [("trained", "0", "0")] * 2

    # an interrupted persona: its folder is incomplete -> redone; the finished one is skipped
    (out / "persona_001" / "adapter_model.safetensors").unlink()
    result = run_script("train_lora_per_user.py", "--config", config, "--max_personas", 2, "--output_dir", root)
    assert result.returncode == 0, result.stderr
    rows = {r["persona_id"]: r["status"] for r in csv.DictReader((root / "training_summary.csv").open())}
    assert rows == {"persona_000": "skipped (complete)", "persona_001": "trained"}
    # same seed and data -> identical weights, whether trained first or alone after an interruption
    again = _weights(out / "persona_001")
    assert first["persona_001"].keys() == again.keys()
    assert all(torch.equal(first["persona_001"][k], again[k]) for k in again)
    assert not any(p.name.startswith(".") for p in out.iterdir())  # no staging folders left


def test_saved_adapter_reproduces_in_memory_logits(tiny_model_dir, demo_files):
    from peft import PeftModel, get_peft_model

    from adaptcommand.model.adapters import lora_config, save_adapter
    from adaptcommand.model.modeling import load_model_and_tokenizer
    from adaptcommand.model.training import collate, dialog_example, train_adapter

    cfg = with_values(defaults(), "lora", r=4, alpha=8, target_modules=["q_proj", "v_proj"])
    cfg = with_values(cfg, "training", epochs=1, batch_size=2, learning_rate=1e-2)
    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    dialogs = demo_files["dialogs"]
    examples = [dialog_example(tokenizer, dialogs[i], cfg.prompt, 512) for i in range(4)]
    peft_model = get_peft_model(model, lora_config(cfg.lora), adapter_name="job_x")
    train_adapter(peft_model, examples, examples[:2], cfg.training, tokenizer.pad_token_id, 0, progress=False)
    input_ids, attention, _ = collate(examples[:2], tokenizer.pad_token_id)
    with torch.no_grad():
        in_memory = peft_model(input_ids=input_ids, attention_mask=attention).logits
    folder = demo_files["dialogs_path"].parent / "saved_adapter"
    save_adapter(peft_model, "job_x", folder, {"note": "test"})
    fresh, _, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    loaded = PeftModel.from_pretrained(fresh, folder).eval()
    with torch.no_grad():
        reloaded = loaded(input_ids=input_ids, attention_mask=attention).logits
    torch.testing.assert_close(reloaded, in_memory)
    with torch.no_grad(), loaded.disable_adapter():  # the adapter really changed the model
        assert not torch.allclose(in_memory, loaded(input_ids=input_ids, attention_mask=attention).logits)
    shutil.rmtree(folder)


def test_failing_persona_does_not_stop_the_others(train_config, demo_files, tmp_path):
    splits = json.loads(demo_files["splits_path"].read_text())
    splits["persona_001"]["train"] = []
    broken = tmp_path / "splits_broken.json"
    broken.write_text(json.dumps(splits))
    config = json.loads(train_config().read_text())
    config["data"]["splits"] = str(broken)
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "pu"
    result = run_script("train_lora_per_user.py", "--config", path, "--output_dir", out)
    assert result.returncode == 1
    assert "persona_001 (seed 0): FAILED" in result.stdout + result.stderr
    rows = {r["persona_id"]: r["status"] for r in csv.DictReader((out / "training_summary.csv").open())}
    assert rows == {"persona_000": "trained", "persona_001": "failed", "persona_002": "trained"}
    assert not (out / "seed_0" / "persona_001").exists() and (out / "seed_0" / "persona_000").is_dir()


def test_two_unified_recipes_in_one_folder_keep_their_own_summaries(train_config, tmp_path):
    config = train_config(epochs=1, unified_epochs=1)
    first = run_script("train_lora_per_user.py", "--config", config, "--scope", "all")
    assert first.returncode == 0, first.stderr
    summary = (tmp_path / "lora_all_training_summary.csv").read_text()
    second = run_script("train_lora_per_user.py", "--config", config, "--scope", "all",
                        "--output_dir", tmp_path / "lora_all_lossall", "--set", "training.loss_on=all")
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "lora_all_training_summary.csv").read_text() == summary  # not overwritten by the second
    rows = [next(csv.DictReader((tmp_path / f"{name}_training_summary.csv").open()))
            for name in ("lora_all", "lora_all_lossall")]
    assert [r["status"] for r in rows] == ["trained", "trained"]
    assert rows[0]["train_loss"] != rows[1]["train_loss"]  # the second recipe's own row (loss on every turn)


def test_all_then_per_user_on_all_for_each_seed(train_config, tmp_path):
    config = train_config(epochs=1, unified_epochs=2, early_stopping_patience=5, seeds=[0, 1])
    result = run_script("train_lora_per_user.py", "--config", config, "--scope", "all")
    assert result.returncode == 0, result.stderr
    unified = tmp_path / "lora_all"
    log = json.loads((unified / "seed_1" / "train_log.json").read_text())
    assert log["scope"] == "all" and log["train_examples"] == 3 * 6 and log["seed"] == 1  # 3 personas x 6 dialogues
    assert len(log["epochs"]) == 2  # training.unified_epochs caps the unified adapter, epochs the per-user ones
    seed_0, seed_1 = _weights(unified / "seed_0"), _weights(unified / "seed_1")
    assert any(not torch.equal(seed_0[k], seed_1[k]) for k in seed_0)  # the seeds really differ
    out = tmp_path / "on_all"
    result = run_script("train_lora_per_user.py", "--config", config, "--scope", "per_user_on_all",
                        "--personas", "persona_002", "--output_dir", out)
    assert result.returncode == 0, result.stderr
    for seed in (0, 1):  # each seed's per-user adapter sits on the unified adapter of that seed
        log = json.loads((out / f"seed_{seed}" / "persona_002" / "train_log.json").read_text())
        assert log["on_unified_adapter"] == str((unified / f"seed_{seed}").resolve())
        assert log["scope"] == "per_user_on_all" and log["seed"] == seed and len(log["epochs"]) == 1
    # the comparator: one adapter on everyone's dialogues, on the unified adapter, capped like the per-user ones
    result = run_script("train_lora_per_user.py", "--config", config, "--scope", "all_on_all")
    assert result.returncode == 0, result.stderr
    for seed in (0, 1):
        log = json.loads((tmp_path / "all_on_all" / f"seed_{seed}" / "train_log.json").read_text())
        assert log["on_unified_adapter"] == str((unified / f"seed_{seed}").resolve())
        assert log["scope"] == "all_on_all" and log["train_examples"] == 3 * 6 and len(log["epochs"]) == 1
    assert (tmp_path / "all_on_all_training_summary.csv").is_file()  # beside its folder, named after it
    # without a unified adapter the scope is refused clearly
    shutil.rmtree(unified)
    result = run_script("train_lora_per_user.py", "--config", config, "--scope", "per_user_on_all",
                        "--personas", "persona_000", "--output_dir", tmp_path / "x")
    assert result.returncode == 2 and "no finished unified adapter" in result.stderr


# ------------------------------------------------------------ the real model's architecture and precision
def _small_cfg():
    cfg = with_values(defaults(), "lora", r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    cfg = with_values(cfg, "training", epochs=1, batch_size=2, learning_rate=1e-2)
    cfg = with_values(cfg, "prompt", system_template="You are a home assistant.")
    return cfg


def test_bf16_on_cpu_trains_and_generates(tiny_arch_dir, demo_files):
    """The real configs run in bf16 on a GPU; the same code path runs here in bf16 on the CPU."""
    from peft import get_peft_model

    from adaptcommand.model.adapters import lora_config
    from adaptcommand.model.generation import generate_texts
    from adaptcommand.model.modeling import load_model_and_tokenizer
    from adaptcommand.model.training import dialog_example, forward_backward_rate, train_adapter, trainable_state

    cfg = _small_cfg()
    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu", dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    examples = [dialog_example(tokenizer, demo_files["dialogs"][i], cfg.prompt, 256) for i in range(4)]
    torch.manual_seed(0)
    peft_model = get_peft_model(model, lora_config(cfg.lora), adapter_name="p")
    before = trainable_state(peft_model)
    log = train_adapter(peft_model, examples, examples[:2], cfg.training, tokenizer.pad_token_id, 0, progress=False)
    after = trainable_state(peft_model)
    assert all(v.dtype == torch.float32 for v in after.values())  # PEFT keeps LoRA weights in fp32 over a bf16 base
    assert peft_model.get_base_model().model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert any(not torch.equal(before[k], after[k]) for k in after)
    assert 0 < log["final_train_loss"] < 20 and 0 < log["best_val_loss"] < 20
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert forward_backward_rate(peft_model, examples, tokenizer.pad_token_id) > 0
    assert [name for name, p in peft_model.named_parameters() if p.requires_grad] == trainable  # flags restored
    prompts = ["<|im_start|>user\nLights to 40%.<|im_end|>\n<|im_start|>assistant\n"] * 2
    replies = generate_texts(peft_model, tokenizer, prompts, replace(cfg.generation, max_new_tokens=4),
                             batch_size=2, progress=False)
    assert len(replies) == 2 and replies[0] == replies[1]


def test_merged_unified_adapter_equals_the_adapter_applied(tiny_arch_dir, demo_files, tmp_path):
    """per_user_on_all trains on top of this merge: it must be exactly base + unified adapter."""
    from peft import PeftModel, get_peft_model

    from adaptcommand.model.adapters import lora_config, merge_unified, save_adapter
    from adaptcommand.model.modeling import load_model_and_tokenizer
    from adaptcommand.model.training import collate, dialog_example

    cfg = _small_cfg()
    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    torch.manual_seed(3)
    unified = get_peft_model(model, lora_config(replace(cfg.lora, target_modules=["q_proj", "k_proj", "v_proj"])),
                             adapter_name="all")
    with torch.no_grad():
        for name, p in unified.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    save_adapter(unified, "all", tmp_path / "lora_all", {"scope": "all"})
    examples = [dialog_example(tokenizer, demo_files["dialogs"][i], cfg.prompt, 256) for i in range(2)]
    input_ids, attention, _ = collate(examples, tokenizer.pad_token_id)

    def logits(m):
        with torch.no_grad():
            return m(input_ids=input_ids, attention_mask=attention).logits

    applied = logits(PeftModel.from_pretrained(load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")[0],
                                               str(tmp_path / "lora_all")).eval())
    merged = merge_unified(load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")[0], tmp_path / "lora_all")
    base = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")[0]
    torch.testing.assert_close(logits(merged), applied, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(logits(base), applied, atol=1e-3)


def test_tokenized_examples_are_cached_between_runs(tiny_model_dir, demo_files):
    """A rerun (a new process) reuses the `datasets` cache instead of tokenizing again."""
    code = ("import dataclasses, json, sys; from adaptcommand.model.config import defaults; "
            "from adaptcommand.model.modeling import load_tokenizer; "
            "from adaptcommand.model.training import ValScore, dialog_example, lr_factor, tokenized_dialogs; "
            "p = dataclasses.replace(defaults().prompt, system_template=sys.argv[3]); "
            "ds = tokenized_dialogs(load_tokenizer(sys.argv[1]), sys.argv[2], p, 256); "
            "print(json.dumps([ds.cache_files[0]['filename'], len(ds), ds[0]['input_ids'][:3]]))")

    def run(system):
        out = subprocess.run([sys.executable, "-c", code, str(tiny_model_dir), str(demo_files["dialogs_path"]), system],
                             capture_output=True, text=True, cwd=ROOT, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run("You are a home assistant.")
    mtime = os.path.getmtime(first[0])
    again = run("You are a home assistant.")
    assert again == first and os.path.getmtime(first[0]) == mtime
    assert first[1] == len(demo_files["dialogs"])
    other = run("Another system prompt.")  # other prompt settings: another cache entry
    assert other[0] != first[0]
