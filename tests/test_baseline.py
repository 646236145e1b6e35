import csv
import json
from dataclasses import replace

import pytest
import torch
from conftest import BagOfWordsEmbedder, run_script

from adaptcommand.data.data_io import UserError
from adaptcommand.evaluation.evaluation import TurnScorer, aggregate, build_prompts, collect_turns, make_retriever
from adaptcommand.model.config import defaults, load_config
from adaptcommand.model.generation import encode_prompts, generate_texts, generation_kwargs, padded_batch
from adaptcommand.model.modeling import load_model_and_tokenizer
from adaptcommand.model.prompting import CHARACTER_HEADER, RETRIEVED_HEADER, build_turn_messages, render_prompt

DIALOG = {"persona_id": "persona_000", "session_id": 4, "character": "Theo is a shy beekeeper.",
          "messages": [{"role": "user", "text": "Turn on the lights."}, {"role": "assistant", "text": "What brightness?"},
                       {"role": "user", "text": "50%."}, {"role": "assistant", "text": "Lights at 50%."},
                       {"role": "user", "text": "And the AC to 22 degrees."}, {"role": "assistant", "text": "AC at 22."}]}


# ------------------------------------------------------------ config validation
def _write(tmp_path, obj, name="c.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_config_defaults_and_overrides(tmp_path):
    cfg = load_config(_write(tmp_path, {"generation": {"max_new_tokens": 12}, "prompt": {"include_character": True}}))
    assert cfg.generation.max_new_tokens == 12 and cfg.prompt.include_character is True
    assert cfg.generation.batch_size == defaults().generation.batch_size == 16


@pytest.mark.parametrize("raw,message", [
    ({"generation": {"max_new_token": 12}}, "unknown key generation.max_new_token"),
    ({"generaton": {}}, "unknown section 'generaton'"),
    ({"generation": {"max_new_tokens": "12"}}, "generation.max_new_tokens must be integer"),
    ({"prompt": {"retrieved_history": True}}, "prompt.retrieved_history must be integer"),
    ({"prompt": {"retrieved_history": 0}}, "prompt.retrieved_history must be >= 1, got 0"),
    ({"training": {"learning_rate": 0}}, "training.learning_rate must be > 0, got 0"),
    ({"training": {"max_train_sessions": 0}}, "training.max_train_sessions must be >= 1, got 0"),
    ({"training": {"max_train_sessions": 2.5}}, "training.max_train_sessions must be integer"),
    ({"lora": {"target_modules": []}}, "lora.target_modules must be a non-empty list"),
    ({"arms": {"primary_metric": "routin_f1"}}, "arms.primary_metric is not a metric; known: routine_f1"),
    ({"arms": {"names": ["baseline", "lora_everyone"]}}, "arms.names has unknown arm"),
    ({"arms": {"lora_all": "models/x"}}, "unknown key arms.lora_all"),
    ({"model": {"device": "gpu"}}, "model.device must be one of"),
])
def test_config_errors_name_file_and_key(tmp_path, raw, message):
    path = _write(tmp_path, raw)
    with pytest.raises(UserError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)


def test_bad_config_on_the_command_line_is_one_line(tmp_path):
    path = _write(tmp_path, {"generation": {"max_new_token": 12}})
    result = run_script("run_baseline_benchmark.py", "--config", path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "max_new_token" in result.stderr


def test_set_overrides_values_before_validation(tmp_path):
    path = _write(tmp_path, {"generation": {"max_new_tokens": 12}})
    cfg = load_config(path, ["generation.max_new_tokens=30", "data.dialogs=data/x y.jsonl", "training.seeds=[1, 2]",
                             "prompt.include_character=true"])
    assert cfg.generation.max_new_tokens == 30 and cfg.data.dialogs == "data/x y.jsonl"
    assert cfg.training.seeds == [1, 2] and cfg.prompt.include_character is True
    with pytest.raises(UserError, match=r"\(with --set\): generation.max_new_tokens must be integer"):
        load_config(path, ["generation.max_new_tokens=many"])
    with pytest.raises(UserError, match="expected SECTION.KEY=VALUE"):
        load_config(path, ["generation=3"])
    result = run_script("run_baseline_benchmark.py", "--config", path, "--set", "generation.max_new_token=3")
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0 and "max_new_token" in result.stderr


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="cannot load model .*tried local folder"):
        load_model_and_tokenizer(str(tmp_path / "no_such_model"), device="cpu")


# ------------------------------------------------------------ prompts
def test_history_window_and_exact_chat_text(tiny_model):
    _, tokenizer = tiny_model
    cfg = replace(defaults().prompt, system_template="SYS", max_context_messages=2)
    messages = build_turn_messages(DIALOG, 5, cfg)
    assert [m["content"] for m in messages] == ["SYS", "Lights at 50%.", "And the AC to 22 degrees."]
    assert render_prompt(tokenizer, messages) == (
        "<|im_start|>system\nSYS<|im_end|>\n<|im_start|>assistant\nLights at 50%.<|im_end|>\n"
        "<|im_start|>user\nAnd the AC to 22 degrees.<|im_end|>\n<|im_start|>assistant\n")


def test_character_and_retrieval_switches():
    cfg = replace(defaults().prompt, system_template="SYS")
    assert build_turn_messages(DIALOG, 1, cfg)[0]["content"] == "SYS"
    with_character = build_turn_messages(DIALOG, 1, replace(cfg, include_character=True))[0]["content"]
    assert with_character == f"SYS\n\n{CHARACTER_HEADER} Theo is a shy beekeeper."
    past = {"messages": [{"role": "user", "text": "x" * 300}, {"role": "assistant", "text": "Done."}]}
    with_retrieved = build_turn_messages(DIALOG, 1, replace(cfg, retrieved_max_messages=1), [past])[0]["content"]
    assert with_retrieved == f"SYS\n\n{RETRIEVED_HEADER}\n[1] User: {'x' * 160}"


def test_retrieval_uses_same_persona_train_dialogues_only(demo_files):
    dialogs, splits = demo_files["dialogs"], demo_files["splits"]
    retriever = make_retriever(BagOfWordsEmbedder(), dialogs, splits, k=2)
    train_0 = splits["persona_000"]["train"]
    target = dialogs[train_0[3]]
    (got,) = retriever.retrieve_many([("persona_000", target["messages"], None)])
    assert got[0] is target  # a dialogue is most similar to itself ...
    (got,) = retriever.retrieve_many([("persona_000", target["messages"], train_0[3])])
    assert target not in got and len(got) == 2  # ... unless it is the dialogue being predicted
    assert all(dialogs.index(d) in train_0 for d in got)


# ------------------------------------------------------------ batched generation
def test_padded_batch_matches_one_by_one_logits(tiny_model):
    model, tokenizer = tiny_model
    cfg = replace(defaults().prompt, system_template="You are a home assistant.")
    prompts = [render_prompt(tokenizer, build_turn_messages(DIALOG, t, cfg)) for t in (1, 3, 5)]
    gen = replace(defaults().generation, max_new_tokens=3)
    kwargs = generation_kwargs(model, tokenizer, gen)
    ids = encode_prompts(tokenizer, prompts)
    assert len({len(i) for i in ids}) == 3  # really padded

    def first_logits(id_lists):
        input_ids, attention = padded_batch(tokenizer, id_lists, "cpu")
        assert (attention[:, -1] == 1).all()  # left padding: every row's last prompt token lines up
        out = model.generate(input_ids=input_ids, attention_mask=attention, output_logits=True,
                             return_dict_in_generate=True, **kwargs)
        return torch.stack(out.logits, dim=1)  # (batch, steps, vocab)

    batched = first_logits(ids)
    for row, single_ids in enumerate(ids):
        single = first_logits([single_ids])
        torch.testing.assert_close(batched[row, 0], single[0, 0], atol=1e-4, rtol=1e-4)


def test_generation_returns_replies_in_prompt_order(tiny_model):
    model, tokenizer = tiny_model
    cfg = replace(defaults().prompt, system_template="S")
    prompts = [render_prompt(tokenizer, build_turn_messages(DIALOG, t, cfg)) for t in (1, 3, 5)]
    gen = replace(defaults().generation, max_new_tokens=4)
    forward = generate_texts(model, tokenizer, prompts, gen, batch_size=3, progress=False)
    backward = generate_texts(model, tokenizer, prompts[::-1], gen, batch_size=3, progress=False)
    assert forward == backward[::-1] and len(forward) == 3


# ------------------------------------------------------------ turns and aggregation
def test_collect_turns_every_assistant_turn(demo_files):
    dialogs, splits = demo_files["dialogs"], demo_files["splits"]
    indices = splits["persona_001"]["test"]
    turns = collect_turns(dialogs, {"persona_001": indices})
    assert len(turns) == sum(m["role"] == "assistant" for i in indices for m in dialogs[i]["messages"])
    assert all(dialogs[t["dialog_index"]]["messages"][t["turn_index"]]["text"] == t["reference"] for t in turns)
    assert {t["persona_id"] for t in turns} == {"persona_001"}
    assert len(collect_turns(dialogs, {"persona_001": indices}, max_examples=3)) == 3
    renamed = collect_turns(dialogs, {"user_1": indices})  # another tool's split may name personas its own way
    assert [t["persona_id"] for t in renamed] == ["user_1"] * len(turns)


def test_scoring_and_aggregation_by_hand():
    dialog = {**DIALOG, "meta": {"time_of_day": "evening"}, "applied_routines": [0],
              "routines": [{"triggers": {"time_of_day": "evening"},
                            "actions": {"lights": {"brightness": 50, "color": "warm"}, "ac": {"temperature": 21}}}]}
    turns = collect_turns([dialog], {DIALOG["persona_id"]: [0]})
    predictions = ["Lights at 50%.", "Lights at 40%.", "AC at 22 degrees."]
    turns = [turns[0], {**turns[0], "reference": "Lights at 50%.", "turn_index": 3}, turns[2]]
    records = TurnScorer(BagOfWordsEmbedder()).score([dialog], turns, predictions)
    assert records[0]["rouge1"] == 0.0 and records[1]["rouge1"] == pytest.approx(2 / 3)
    assert records[1]["embedding_similarity"] == pytest.approx(2 / 3)
    m = aggregate(records)
    # devices: lights{50} vs lights{} ("What brightness?" after the lights), lights vs lights, ac vs ac -> tp 3
    assert m["device_precision"] == 1.0 and m["device_recall"] == 1.0
    # params: turn 1 brightness 50 unmatched (fp), turn 2 40 vs 50 (fp + fn), turn 3 temperature 22 = 22 (tp)
    assert m["param_precision"] == pytest.approx(1 / 3) and m["param_recall"] == pytest.approx(1 / 2)
    assert m["param_f1"] == pytest.approx(0.4)
    # given (stated by the user before): turn 3 misses lights 50 (fn), turn 5 AC 22 (tp); private: 50 at turn 1
    # and 40 at turn 3 predicted, the reference states nothing private (fp 2)
    assert m["param_given_f1"] == pytest.approx(2 / 3) and m["param_private_f1"] == 0.0
    # routine knowledge: lights.brightness (open at turn 1) hit by "Lights at 50%."; lights.color never stated;
    # the AC's temperature is stated in the message that first names the AC -> not testable
    assert (m["routine_settings"], m["routine_recall"], m["routine_precision"]) == (2, 0.5, 1.0)
    assert m["routine_f1"] == pytest.approx(2 / 3) and m["macro_routine_f1"] == pytest.approx(2 / 3)
    assert m["pred_words"] == pytest.approx((3 + 3 + 4) / 3)


# ------------------------------------------------------------ the script end to end
def test_baseline_cli_writes_all_outputs(tiny_model_dir, demo_files, tmp_path):
    config = _write(tmp_path, {
        "model": {"name": str(tiny_model_dir), "device": "cpu"},
        "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(demo_files["splits_path"])},
        "prompt": {"include_character": True, "retrieval": True, "retrieved_history": 1},
        "generation": {"max_new_tokens": 4, "batch_size": 4},
        "evaluation": {"sample_outputs": 5}})
    out = tmp_path / "results"
    result = run_script("run_baseline_benchmark.py", "--config", config, "--max_examples", 12,
                        "--personas", "persona_000,persona_002", "--output_dir", out)
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "baseline_results.json").read_text())
    assert summary["counts"]["turns"] == 12 and summary["device"] == "cpu"
    assert summary["config"]["prompt"]["retrieved_history"] == 1
    for key in ("rouge1", "rougeL", "embedding_similarity", "device_f1", "param_f1", "numerical_exact",
                "routine_f1", "macro_routine_f1", "param_private_f1", "numerical_coverage", "pred_words"):
        assert key in summary["metrics"]
    assert summary["metrics"]["routine_settings"] > 0 and 0 <= summary["metrics"]["routine_f1"] <= 1
    assert "routine_f1=" in result.stdout
    assert set(summary["timings"]) >= {"load_s", "generate_s", "score_s", "total_s", "turns_per_s"}
    per_persona = json.loads((out / "per_persona_results.json").read_text())
    assert sum(m["turns"] for m in per_persona.values()) == 12
    rows = list(csv.DictReader((out / "per_persona_summary.csv").open()))
    assert [r["persona_id"] for r in rows] == sorted(per_persona) and "routine_f1" in rows[0]
    samples = [json.loads(line) for line in (out / "sample_outputs.jsonl").read_text().splitlines()]
    assert len(samples) == 5
    assert set(samples[0]) == {"persona_id", "session_id", "turn_index", "history", "prediction", "reference",
                               "pred_actions", "ref_actions"}


def test_chained_turns_give_identical_replies_with_less_prefill(tiny_arch_dir, demo_files):
    """Each dialogue's history read once (a cache carried across its turns) changes no reply."""
    from peft import LoraConfig, get_peft_model

    from adaptcommand.model.generation import GenerationStats
    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu")
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
                           adapter_name="p1").eval()
    dialogs, splits = demo_files["dialogs"], demo_files["splits"]
    turns = collect_turns(dialogs, {p: s["test"] for p, s in splits.items()})
    cfg = replace(defaults().prompt, system_template="You are a home assistant.", max_context_messages=6)
    prompts = build_prompts(tokenizer, dialogs, turns, cfg)
    keys = [t["dialog_index"] for t in turns]
    names = ["p1" if t["persona_id"] == "persona_001" else "__base__" for t in turns]
    gen = replace(defaults().generation, max_new_tokens=6)
    fresh, chained = GenerationStats(), GenerationStats()
    alone = generate_texts(model, tokenizer, prompts, gen, batch_size=4, adapter_names=names, progress=False,
                           stats=fresh)
    together = generate_texts(model, tokenizer, prompts, gen, batch_size=4, adapter_names=names, progress=False,
                              chain_keys=keys, stats=chained)
    assert together == alone and len(set(alone)) > 1
    encoded = encode_prompts(tokenizer, prompts)
    assert fresh.prefilled == sum(len(i) for i in encoded)
    # a 6-message window slides: a turn whose prompt extends its dialogue's previous prompt costs only
    # what is new; one whose window dropped a message starts over
    expected, previous = 0, {}
    for ids, key in zip(encoded, keys):
        before = previous.get(key)
        extends = before is not None and len(ids) > len(before) and ids[: len(before)] == before
        expected += len(ids) - (len(before) if extends else 0)
        previous[key] = ids
    assert chained.prefilled == expected < fresh.prefilled


def test_chained_replies_identical_on_the_embedded_model(demo_files):
    """The same check on the real embedded chat model (SmolLM2-135M-Instruct), against one turn at a time."""
    from adaptcommand.model.modeling import load_model_and_tokenizer

    model, tokenizer, _ = load_model_and_tokenizer("embedded:smollm2-135m-instruct", device="cpu")
    dialogs, splits = demo_files["dialogs"], demo_files["splits"]
    turns = collect_turns(dialogs, {p: s["test"] for p, s in splits.items()}, max_examples=10)
    prompts = build_prompts(tokenizer, dialogs, turns, defaults().prompt)
    gen = replace(defaults().generation, max_new_tokens=12)
    one_at_a_time = [generate_texts(model, tokenizer, [p], gen, progress=False)[0] for p in prompts]
    chained = generate_texts(model, tokenizer, prompts, gen, progress=False,
                             chain_keys=[t["dialog_index"] for t in turns])
    assert chained == one_at_a_time and len(set(chained)) > 1


def test_greedy_ignores_the_sampling_and_penalty_defaults_a_model_ships(tiny_model_dir, tmp_path):
    """A model saved with Qwen2.5-Instruct's generation_config (sampling, a repetition penalty) gives the same
    greedy replies as the same weights without it."""
    import shutil

    from transformers import GenerationConfig

    from adaptcommand.model.config import defaults
    from adaptcommand.model.generation import generate_texts
    from adaptcommand.model.modeling import load_model_and_tokenizer
    from adaptcommand.model.prompting import build_turn_messages, render_prompt

    qwen_like = tmp_path / "qwen_like"
    shutil.copytree(tiny_model_dir, qwen_like)
    shipped = GenerationConfig.from_pretrained(tiny_model_dir)  # its special tokens, plus Qwen's sampling defaults
    shipped.update(do_sample=True, temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.5, no_repeat_ngram_size=2)
    shipped.save_pretrained(qwen_like)
    dialog = {"messages": [{"role": "user", "text": "Lights to 40%, please."}, {"role": "assistant", "text": "Done."}]}
    replies = {}
    for name, folder in (("plain", tiny_model_dir), ("qwen_like", qwen_like)):
        model, tokenizer, _ = load_model_and_tokenizer(str(folder), device="cpu")
        assert model.generation_config.repetition_penalty in (None, 1.0) and not model.generation_config.do_sample
        prompt = render_prompt(tokenizer, build_turn_messages(dialog, 1, replace(defaults().prompt, system_template="S")))
        replies[name] = generate_texts(model, tokenizer, [prompt] * 2, replace(defaults().generation, max_new_tokens=12),
                                       progress=False)
    assert replies["qwen_like"] == replies["plain"]
