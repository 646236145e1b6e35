"""The stage scripts against bad and edge inputs: each ends in a clean run that lists the faulty unit, or in
exit code 1 or 2 with one line naming the file, persona or key; never a traceback, never a half-written file."""

import csv
import json

import pytest
from conftest import run_script, write_raw

from adaptcommand.data.demo_data import generate


def _clean(result):
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return result


def _no_temporaries(folder):
    """Nothing half-written: atomic writes leave no temporary sibling behind."""
    leftovers = [p for p in folder.rglob("*") if ".tmp" in p.name]
    assert not leftovers, leftovers


@pytest.fixture()
def config(tmp_path, tiny_model_dir, demo_files):
    def make(kind="train", splits=None, **sections):
        cfg = {"model": {"name": str(tiny_model_dir), "device": "cpu"},
               "data": {"dialogs": str(demo_files["dialogs_path"]), "splits": str(splits or demo_files["splits_path"])},
               "lora": {"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]},
               "training": {"epochs": 1, "batch_size": 2, "learning_rate": 1e-2, "max_seq_length": 512},
               "generation": {"max_new_tokens": 2, "batch_size": 8},
               "evaluation": {"cloze": False},
               "adapters": {"lora_all": str(tmp_path / "lora_all"), "lora_per_user": str(tmp_path / "per_user")},
               "arms": {"n_bootstrap": 200, "best_on_val": False}}
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        path = tmp_path / f"{kind}_{len(list(tmp_path.glob(f'{kind}_*.json')))}.json"
        path.write_text(json.dumps(cfg))
        return path
    return make


def _split_without(demo_files, tmp_path, part):
    """(the first persona, a split file in which it has no `part` dialogues, the split)."""
    splits = json.loads(demo_files["splits_path"].read_text())
    first = sorted(splits)[0]
    splits[first][part] = []
    path = tmp_path / f"splits_no_{part}.json"
    path.write_text(json.dumps(splits))
    return first, path, splits


def _summary(root):
    return {r["persona_id"]: r for r in csv.DictReader((root / "training_summary.csv").open())}


def test_nan_loss_marks_every_adapter_failed_with_the_reason(config, tmp_path):
    for parallel in (1, 2):
        root = tmp_path / f"per_user_{parallel}"
        result = _clean(run_script("train_lora_per_user.py", "--config", config(), "--max_personas", 2,
                                   "--output_dir", root, "--set", "training.learning_rate=1e30",
                                   "--set", f"training.parallel_personas={parallel}"))
        assert result.returncode == 1
        rows = _summary(root)
        assert {r["status"] for r in rows.values()} == {"failed"}
        assert all("not finite" in r["error"] for r in rows.values())
        assert not list(root.rglob("adapter_model.safetensors"))


def test_first_persona_without_train_dialogues_does_not_stop_the_others(config, demo_files, tmp_path):
    first, path, splits = _split_without(demo_files, tmp_path, "train")
    for parallel in (1, 2):
        root = tmp_path / f"per_user_{parallel}"
        result = _clean(run_script("train_lora_per_user.py", "--config", config(splits=path), "--output_dir", root,
                                   "--set", f"training.parallel_personas={parallel}"))
        assert result.returncode == 1 and f"failed: {first} (seed 0)" in result.stderr
        rows = _summary(root)
        assert rows[first]["error"].startswith("no train dialogues")
        assert sum(r["status"] == "trained" for r in rows.values()) == len(splits) - 1


def test_parallel_runs_over_other_personas_share_one_summary(config, tmp_path):
    root = tmp_path / "per_user"
    for persona in ("persona_000", "persona_001"):
        assert _clean(run_script("train_lora_per_user.py", "--config", config(), "--personas", persona,
                                 "--output_dir", root)).returncode == 0
    assert set(_summary(root)) == {"persona_000", "persona_001"}


@pytest.mark.parametrize("arms", [["echo", "oracle"], ["baseline"], ["echo", "lora_per_user"]])
def test_evaluation_of_policies_only_prompt_arms_only_or_arms_without_adapters(config, tmp_path, arms):
    out = tmp_path / "results"
    result = _clean(run_script("eval_lora.py", "--config", config("eval", evaluation={"train_sessions": 1}),
                               "--output_dir", out, "--set", f"arms.names={json.dumps(arms)}"))
    if "lora_per_user" in arms:  # no adapter trained at all: reported, with exit code 1
        assert result.returncode == 1 and "no usable adapter at all for lora_per_user" in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert set(json.loads((out / "arm_metrics.json").read_text())["arms"]) == set(arms)
    _no_temporaries(out)


@pytest.mark.parametrize("args, message", [
    (["--set", 'arms.names=["echo","lora_everyone"]'], "arms.names has unknown arm(s) ['lora_everyone']"),
    (["--personas", "nobody"], "unknown persona(s) nobody"),
    (["--set", "evaluation.persona_group=0"], "evaluation.persona_group must be >= 1"),
])
def test_bad_arguments_end_in_one_line(config, tmp_path, args, message):
    result = _clean(run_script("eval_lora.py", "--config", config("eval"), "--output_dir", tmp_path / "r", *args))
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(errors) == 1 and message in errors[0]


def test_an_output_folder_that_cannot_be_written_is_one_line_naming_it(config, tmp_path):
    """A write that fails (here: the output folder is a file; a full disk or a read-only folder fails the same
    way, with an OSError) ends in one line naming the path, exit code 1."""
    out = tmp_path / "taken"
    out.write_text("a file where the results folder should be")
    result = _clean(run_script("eval_lora.py", "--config", config("eval"), "--output_dir", out,
                               "--set", 'arms.names=["echo"]'))
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 1 and errors == [f"error: {out}: File exists"]
    assert out.read_text() == "a file where the results folder should be"


def test_a_persona_without_val_dialogues_keeps_its_last_epoch(config, demo_files, tmp_path):
    first, path, _ = _split_without(demo_files, tmp_path, "val")
    root = tmp_path / "per_user"
    result = _clean(run_script("train_lora_per_user.py", "--config", config(splits=path), "--personas", first,
                               "--output_dir", root, "--set", "training.epochs=2"))
    assert result.returncode == 0, result.stderr
    assert _summary(root)[first]["best_epoch"] == "2"


def test_empty_persona_is_named_and_left_out_and_a_spontaneous_only_one_is_kept(tmp_path):
    characters, routines, sessions = generate(3, 10, seed=5)
    sessions[1] = {"sessions": []}
    for session in sessions[2]["sessions"]:
        session["applied_routines"] = None
    raw = write_raw(tmp_path / "raw", characters, routines, sessions)
    out = tmp_path / "clean.jsonl"
    result = _clean(run_script("clean_data.py", "--raw_dir", raw, "--output", out))
    assert result.returncode == 0, result.stderr
    assert "1 persona(s) with no usable session left out: persona_001 (sessions.jsonl:2)" in result.stderr
    report = json.loads((tmp_path / "cleaning_report.json").read_text())
    assert report["personas_without_dialogues"] == ["persona_001 (sessions.jsonl:2)"]
    split = _clean(run_script("create_splits.py", "--input", out, "--output", tmp_path / "splits.json"))
    assert split.returncode == 0, split.stderr
    assert set(json.loads((tmp_path / "splits.json").read_text())) == {"persona_000", "persona_002"}


def test_a_persona_without_test_dialogues_is_left_out_of_the_tables(config, demo_files, tmp_path):
    first, path, splits = _split_without(demo_files, tmp_path, "test")
    out = tmp_path / "results"
    result = _clean(run_script("eval_lora.py", "--config", config("eval", splits=path), "--output_dir", out,
                               "--set", 'arms.names=["echo","oracle","baseline"]'))
    assert result.returncode == 0, result.stderr
    arms = json.loads((out / "arm_metrics.json").read_text())["arms"]
    assert arms["baseline"]["personas"] == len(splits) - 1
    _no_temporaries(out)
