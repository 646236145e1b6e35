"""The AdapterStore serves LoRA adapters exactly as PEFT does, at a cost that does not grow with the store."""

from dataclasses import replace

import pytest
import torch

from adaptcommand.model.adapters import save_adapter
from adaptcommand.model.config import defaults
from adaptcommand.model.generation import encode_prompts, generate_texts, padded_batch
from adaptcommand.model.modeling import load_model_and_tokenizer
from adaptcommand.model.prompting import build_turn_messages, render_prompt
from adaptcommand.model.serving import BASE, AdapterStore, merge_lora

DIALOG = {"messages": [{"role": "user", "text": "Lights to 40%, please."}, {"role": "assistant", "text": "Done."},
                       {"role": "user", "text": "And the TV volume to 12."}, {"role": "assistant", "text": "Set."}]}


def _adapters(model_dir, folder, specs, dtype="float32"):
    """Random LoRA adapters saved as PEFT folders: specs = [(name, r, alpha, targets, seed)]."""
    from peft import LoraConfig, get_peft_model

    folders = {}
    for name, r, alpha, targets, seed in specs:
        model, _, _ = load_model_and_tokenizer(str(model_dir), device="cpu", dtype=dtype)
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=targets,
                                                      init_lora_weights=False), adapter_name="x")
        folders[name] = folder / name
        save_adapter(peft_model, "x", folders[name], {"note": "random"})
    return folders


SPECS = [("a", 4, 8, ["q_proj", "v_proj"], 1), ("b", 8, 32, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                              "up_proj", "down_proj"], 2)]


def _peft(model_dir, folders, dtype="float32"):
    from adaptcommand.model.adapters import attach_adapters

    model, _, _ = load_model_and_tokenizer(str(model_dir), device="cpu", dtype=dtype)
    return attach_adapters(model, folders)


def _store(model_dir, folders, dtype="float32"):
    model, tokenizer, _ = load_model_and_tokenizer(str(model_dir), device="cpu", dtype=dtype)
    store = AdapterStore.for_folders(model, folders.values())
    assert store.load(folders) == {}
    return model, tokenizer


def _batch(tokenizer):
    cfg = replace(defaults().prompt, system_template="S")
    prompts = [render_prompt(tokenizer, build_turn_messages(DIALOG, t, cfg)) for t in (1, 3, 3)]
    return prompts, padded_batch(tokenizer, encode_prompts(tokenizer, prompts), "cpu")


def test_store_logits_equal_peft_one_adapter_at_a_time(tiny_arch_dir, tmp_path):
    folders = _adapters(tiny_arch_dir, tmp_path, SPECS)
    served, tokenizer = _store(tiny_arch_dir, folders)
    peft_model = _peft(tiny_arch_dir, folders)
    _, (input_ids, attention) = _batch(tokenizer)
    names = ["a", "b", BASE]
    with torch.no_grad():
        served.adapter_store.route(names)
        mixed = served(input_ids=input_ids, attention_mask=attention).logits
        for row, name in enumerate(names):
            alone = peft_model(input_ids=input_ids[row:row + 1], attention_mask=attention[row:row + 1],
                               adapter_names=[name]).logits
            torch.testing.assert_close(mixed[row:row + 1], alone, atol=1e-5, rtol=1e-5)
        one, other = (peft_model(input_ids=input_ids, attention_mask=attention, adapter_names=[n] * 3).logits
                      for n in ("a", "b"))
    assert not torch.allclose(one, other)  # the adapters differ, so the equality above is not trivial


def test_store_replies_equal_peft_replies(tiny_arch_dir, tmp_path):
    folders = _adapters(tiny_arch_dir, tmp_path, SPECS)
    served, tokenizer = _store(tiny_arch_dir, folders)
    peft_model = _peft(tiny_arch_dir, folders)
    prompts, _ = _batch(tokenizer)
    gen = replace(defaults().generation, max_new_tokens=6)
    names = ["a", "b", BASE, "b", "a", BASE]
    ours = generate_texts(served, tokenizer, prompts * 2, gen, batch_size=3, adapter_names=names, progress=False,
                          chain_keys=[0, 0, 1, 1, 2, 2])
    alone = [generate_texts(peft_model, tokenizer, [p], gen, adapter_names=[n], progress=False)[0]
             for p, n in zip(prompts * 2, names)]
    assert ours == alone


def test_store_cloze_scores_equal_peft(tiny_arch_dir, tmp_path):
    from adaptcommand.evaluation.cloze import shared_prefix_logprobs

    folders = _adapters(tiny_arch_dir, tmp_path, SPECS)
    served, tokenizer = _store(tiny_arch_dir, folders)
    peft_model = _peft(tiny_arch_dir, folders)
    ids = encode_prompts(tokenizer, _batch(tokenizer)[0])
    sequences = [(ids[1][:-3], [ids[1][-3:], ids[0][-2:], [ids[2][5]]])]
    for name in ("a", "b"):
        ours = shared_prefix_logprobs(served, sequences, name)[0]
        theirs = shared_prefix_logprobs(peft_model, sequences, name)[0]
        assert ours == pytest.approx(theirs, abs=1e-4)


def test_store_in_bfloat16_equals_peft_in_bfloat16(tiny_arch_dir, tmp_path):
    folders = _adapters(tiny_arch_dir, tmp_path, SPECS)
    served, tokenizer = _store(tiny_arch_dir, folders, dtype="bfloat16")
    peft_model = _peft(tiny_arch_dir, folders, dtype="bfloat16")
    _, (input_ids, attention) = _batch(tokenizer)
    with torch.no_grad():
        served.adapter_store.route(["b", "a", "b"])
        ours = served(input_ids=input_ids, attention_mask=attention).logits.float()
        theirs = peft_model(input_ids=input_ids, attention_mask=attention, adapter_names=["b", "a", "b"]).logits.float()
    assert ours.dtype == theirs.dtype and served.dtype == torch.bfloat16
    # bf16 keeps 8 bits of mantissa: a logit near 4 is rounded to steps of 1/32, so a few differ by one step
    torch.testing.assert_close(ours, theirs, atol=5e-2, rtol=2e-2)
    assert (ours - theirs).abs().mean() < 1e-3


def test_unified_adapter_merged_in_float32_matches_it_served_in_bfloat16(tiny_arch_dir, tmp_path):
    """The on-unified arms see the unified adapter merged into the base; lora_all sees it served. In bfloat16
    both must be the same adapter up to one rounding of the weights."""
    folders = _adapters(tiny_arch_dir, tmp_path, SPECS[1:])
    served, tokenizer = _store(tiny_arch_dir, folders, dtype="bfloat16")
    merged, _, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu", dtype="bfloat16")
    merge_lora(merged, folders["b"])
    base, _, _ = load_model_and_tokenizer(str(tiny_arch_dir), device="cpu", dtype="bfloat16")
    _, (input_ids, attention) = _batch(tokenizer)
    with torch.no_grad():
        served.adapter_store.route(["b"] * 3)
        ours = served(input_ids=input_ids, attention_mask=attention).logits.float()
        theirs = merged(input_ids=input_ids, attention_mask=attention).logits.float()
        plain = base(input_ids=input_ids, attention_mask=attention).logits.float()
    gap = (ours - theirs).abs().max()
    assert gap < 0.1 * (ours - plain).abs().max()  # far closer to each other than to the base without it
    assert merged.dtype == torch.bfloat16


def _forward_calls(model, input_ids, attention, **kwargs):
    """How many module forwards one model call runs: what PEFT's per-adapter loops add to."""
    calls = []
    hooks = [m.register_forward_hook(lambda *_: calls.append(1)) for m in model.modules()]
    with torch.no_grad():
        model(input_ids=input_ids, attention_mask=attention, **kwargs)
    for hook in hooks:
        hook.remove()
    return len(calls)


def test_a_calls_cost_does_not_grow_with_the_adapters_in_the_store(tiny_model_dir, tmp_path):
    """Timing-free: the modules a forward runs, and the model's modules, are the same with 3 or 30 adapters
    held; PEFT's grow with the adapters loaded."""
    from adaptcommand.model.adapters import attach_adapters

    base = _adapters(tiny_model_dir, tmp_path, SPECS[:1])["a"]
    few = {f"u{i}": base for i in range(3)}
    many = {f"u{i}": base for i in range(30)}
    model, tokenizer = _store(tiny_model_dir, few)
    _, (input_ids, attention) = _batch(tokenizer)
    model.adapter_store.route(["u0", "u1", "u2"])
    calls_few, modules_few = _forward_calls(model, input_ids, attention), len(list(model.modules()))
    assert model.adapter_store.load(many) == {}
    model.adapter_store.route(["u0", "u1", "u2"])
    assert _forward_calls(model, input_ids, attention) == calls_few
    assert len(list(model.modules())) == modules_few

    peft_calls = {}
    for label, held in (("few", few), ("many", many)):
        plain, _, _ = load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
        peft_model = attach_adapters(plain, held)
        peft_calls[label] = len(list(peft_model.modules()))
    assert peft_calls["many"] > peft_calls["few"] + 100  # what the store avoids


def test_store_sets_aside_an_adapter_that_does_not_fit(tiny_model_dir, tmp_path):
    folders = _adapters(tiny_model_dir, tmp_path, SPECS[:1])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    model, _ = _store(tiny_model_dir, folders)
    problems = model.adapter_store.load({"a": folders["a"], "bad": broken})
    assert list(problems) == ["bad"] and "adapter_config.json unreadable" in problems["bad"]
    assert set(model.adapter_store.slot_of) == {BASE, "a"}


def test_store_cloze_cached_scores_equal_full_sequence_scores_in_bfloat16(tiny_arch_dir, tmp_path):
    from adaptcommand.evaluation.cloze import candidate_logprobs

    folders = _adapters(tiny_arch_dir, tmp_path, SPECS)
    served, tokenizer = _store(tiny_arch_dir, folders, dtype="bfloat16")
    ids = encode_prompts(tokenizer, _batch(tokenizer)[0])[1]
    prefix, tails = ids[:-4], [ids[-4:], ids[-3:], ids[-6:-4] + ids[-2:]]
    cached = candidate_logprobs(served, prefix, tails, "b")
    for tail, score in zip(tails, cached):
        served.adapter_store.route(["b"])
        with torch.no_grad():
            logp = torch.log_softmax(served(input_ids=torch.tensor([prefix + tail])).logits[0].float(), dim=-1)
        full = sum(float(logp[len(prefix) + j - 1, tok]) for j, tok in enumerate(tail))
        assert score == pytest.approx(full, abs=0.15)  # a few tokens' log-probabilities, each rounded in bf16
