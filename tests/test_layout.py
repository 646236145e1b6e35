"""The project's shape: the documented split format everywhere, no stdlib shadowing, no stage-to-stage imports."""

import ast
import json
import subprocess
import sys

import pytest
from conftest import ROOT, run_script

from adaptcommand.data.data_io import UserError
from adaptcommand.data.splits import load_splits, make_splits, split_report
from adaptcommand.model.config import load_config

STAGE_SCRIPTS = ("clean_data", "create_splits", "run_baseline_benchmark", "train_lora_per_user", "eval_lora",
                 "make_demo_data", "download_data", "analyze_results")
SPLIT_READERS = ("train_lora_per_user.py", "eval_lora.py", "run_baseline_benchmark.py")


def _imported_modules(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
            yield from (f"{node.module}.{alias.name}" for alias in node.names)


LAYERS = ("data", "model", "evaluation")  # data flows one way: a module imports only its own layer or earlier ones
LIBRARY = sorted((ROOT / "adaptcommand").rglob("*.py"))


def test_no_module_shadows_the_standard_library():
    modules = {p.stem for folder in ("scripts", "benchmarks", "tests") for p in (ROOT / folder).glob("*.py")}
    modules |= {p.stem for p in LIBRARY if p.stem != "__init__"} | {p.parent.name for p in LIBRARY}
    assert modules & set(sys.stdlib_module_names) == set()


def test_no_lower_layer_imports_a_higher_one():
    assert {p.parent.name for p in LIBRARY} == {"adaptcommand", *LAYERS}  # every module sits in a layer
    offenders = {}
    for path in LIBRARY:
        if path.parent.name not in LAYERS:
            continue
        rank = LAYERS.index(path.parent.name)
        for module in _imported_modules(path):
            parts = module.split(".")
            if parts[0] == "adaptcommand" and len(parts) > 1 and parts[1] in LAYERS and LAYERS.index(parts[1]) > rank:
                offenders.setdefault(str(path.relative_to(ROOT)), set()).add(module)
    assert offenders == {}


def test_the_library_never_imports_a_stage_script_and_nothing_installs_scripts(tmp_path):
    stages = {f"scripts.{s}" for s in STAGE_SCRIPTS} | set(STAGE_SCRIPTS)
    for path in LIBRARY:
        imported = set(_imported_modules(path))
        assert not imported & stages and not any(m == "scripts" or m.startswith("scripts.") for m in imported), path
    assert not (ROOT / "scripts" / "__init__.py").exists()
    assert 'include = ["adaptcommand*"]' in (ROOT / "pyproject.toml").read_text()
    # outside the repository, the environment knows adaptcommand and no top-level `scripts` package
    probe = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('scripts') is None, "
                            "u.find_spec('adaptcommand') is not None)"], capture_output=True, text=True, cwd=tmp_path)
    assert probe.stdout.split() == ["True", "True"], probe.stderr
    assert sorted(p.stem for p in (ROOT / "scripts").glob("*.py")) == sorted(STAGE_SCRIPTS)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.json")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg.source == str(path)


def test_no_script_imports_a_stage_script():
    stages = {f"scripts.{s}" for s in STAGE_SCRIPTS} | set(STAGE_SCRIPTS)
    offenders = {}
    for path in [*(ROOT / "scripts").glob("*.py"), *(ROOT / "benchmarks").glob("*.py"), *LIBRARY]:
        bad = stages & set(_imported_modules(path))
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}
    assert all((ROOT / "scripts" / f"{s}.py").is_file() for s in STAGE_SCRIPTS)  # the list above is not stale


# ------------------------------------------------------------ the documented split format
def test_split_written_by_another_tool_loads_unchanged(demo_files):
    """conftest's demo split: personas and indices out of order, `online` overlapping `train`."""
    loaded = load_splits(demo_files["splits_path"], demo_files["dialogs"])
    written = json.loads(demo_files["splits_path"].read_text())
    assert list(written) == sorted(written, reverse=True)  # really written out of order
    assert loaded == {p: {k: written[p][k] for k in ("train", "val", "test", "online")} for p in written}
    entry = loaded["persona_001"]
    assert entry["train"] != sorted(entry["train"]) and set(entry["online"]) & set(entry["train"])


def test_persona_names_need_not_match_the_dialogues_file(demo_files, tmp_path):
    renamed = {f"user_{k}": entry for k, entry in enumerate(demo_files["splits"].values())}
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(renamed))
    assert load_splits(path, demo_files["dialogs"]) == renamed


def test_create_splits_writes_the_documented_shape_and_a_separate_report(demo_files, tmp_path):
    result = run_script("create_splits.py", "--input", demo_files["dialogs_path"], "--output", tmp_path / "s.json",
                        "--min_dialogues", "5")
    assert result.returncode == 0, result.stderr
    written = json.loads((tmp_path / "s.json").read_text())
    assert set(written) == {"persona_000", "persona_001", "persona_002"}
    assert all(set(entry) == {"train", "val", "test", "online"} for entry in written.values())
    assert written == make_splits(demo_files["dialogs"], min_dialogues=5)
    report = json.loads((tmp_path / "split_report.json").read_text())
    assert report == {"source": str(demo_files["dialogs_path"]), "ratios": [0.6, 0.2, 0.2], "online_k": 5,
                      **split_report(written, demo_files["dialogs"])}
    assert report["no_overlap"] and report["complete"] and report["temporal_order"]


BAD_SPLITS = {  # name -> (mutation of the documented split, words the one-line error must contain)
    "not_an_object": (lambda s: [1, 2], "non-empty JSON object"),
    "old_format": (lambda s: {"train": [], "val": [], "per_persona": s}, "old-format"),
    "missing_test": (lambda s: {**s, "persona_001": {"train": [0], "val": [1]}}, "persona 'persona_001': missing 'test'"),
    "string_index": (lambda s: {**s, "persona_002": {**s["persona_002"], "val": ["3"]}},
                     "persona 'persona_002': 'val' must be a list"),
    "leak": (lambda s: {**s, "persona_000": {**s["persona_000"], "test": s["persona_000"]["train"][:1]}},
             "persona 'persona_000': dialogue"),
    "out_of_range": (lambda s: {**s, "persona_001": {**s["persona_001"], "online": [10_000]}},
                     "persona 'persona_001': 'online' index 10000 is past the end"),
    "other_personas_dialogues": (lambda s: {**s, "persona_000": {**s["persona_000"], "val": s["persona_001"]["val"]}},
                                 "persona 'persona_000'"),
}


@pytest.mark.parametrize("case", sorted(BAD_SPLITS))
def test_malformed_split_is_one_line_naming_file_and_persona(case, demo_files, tmp_path):
    mutate, words = BAD_SPLITS[case]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(mutate(demo_files["splits"])))
    with pytest.raises(UserError) as error:
        load_splits(path, demo_files["dialogs"])
    message = str(error.value)
    assert message.startswith(str(path)) and words in message and "\n" not in message


@pytest.mark.parametrize("script", SPLIT_READERS)
def test_every_script_reports_a_malformed_split_in_one_line(script, demo_files, tmp_path):
    broken = {**demo_files["splits"], "persona_001": {"train": [0], "val": [1]}}
    (tmp_path / "bad.json").write_text(json.dumps(broken))
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"data": {"dialogs": str(demo_files["dialogs_path"]),
                                           "splits": str(tmp_path / "bad.json")}}))
    result = run_script(script, "--config", config)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert str(tmp_path / "bad.json") in lines[0] and "persona 'persona_001'" in lines[0]


def _make_dry_run(*args):
    """The shell commands `make -n` prints, one per line (continuation lines joined)."""
    result = subprocess.run(["make", "-n", "--no-print-directory", *args], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [" ".join(line.split()) for line in result.stdout.replace("\\\n", " ").splitlines()]


def _arm_names(command):
    return json.loads(command.split("arms.names=")[1].split("'")[0])


def test_dose_response_trains_on_user_turns_only_without_a_volunteered_value():
    """make dose-response: both controls at each strength, both per-user scopes evaluated with the cloze;
    training.loss_on all (and *_lossall folders) at share 0 only."""
    commands = _make_dry_run("dose-response", "DOSE_SHARES=0.22 0", "CONTROL_SEED=3")
    evaluations = [c for c in commands if "scripts/eval_lora.py" in c]
    assert len(evaluations) == 4  # positive and negative at two strengths
    for command in evaluations:
        assert "evaluation.cloze=true" in command
        assert _arm_names(command)[-3:] == ["lora_all", "lora_per_user", "lora_per_user_on_all"]
    runs = {c.split("--output_dir ")[1].split()[0] for c in evaluations}
    assert runs == {f"results/controls/{kind}_seed3_share{share}_12x25_{name}" for kind in ("positive", "negative")
                    for share, name in (("0.22", "shipped"), ("0", "shipped_lossall"))}
    trainings = [c for c in commands if "train_lora_per_user.py" in c]
    assert len(trainings) == 8 and all(("training.loss_on=all" in c) == ("share0_" in c) for c in trainings)


def test_a_control_evaluates_the_scopes_it_trains():
    default = next(c for c in _make_dry_run("control-positive") if "scripts/eval_lora.py" in c)
    assert "evaluation.cloze=false" in default and _arm_names(default)[-2:] == ["lora_all", "lora_per_user_on_all"]
    commands = _make_dry_run("control-positive", "CONTROL_SCOPES=per_user_on_all prefix_all prefix_per_user",
                             "CONTROL_RESULTS_NAME=with_prefix")
    evaluation = next(c for c in commands if "scripts/eval_lora.py" in c)
    assert _arm_names(evaluation)[-3:] == ["lora_per_user_on_all", "prefix_all", "prefix_per_user"]
    assert "--output_dir results/controls/positive_seed0_share0.6_12x25_with_prefix" in evaluation
    assert "adapters.prefix_all=models/controls/positive_seed0_share0.6_12x25/prefix_all_shipped" in evaluation
