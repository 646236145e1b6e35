import copy
import json
import os

import pytest
from conftest import run_script, write_raw

from adaptcommand.data.cleaning import clean
from adaptcommand.data.demo_data import PUBLISHED, generate, statistics
from adaptcommand.data.schema import TRIGGERS, active_actions, triggers_match
from adaptcommand.data.splits import make_splits, split_report


# ------------------------------------------------------------ demo data
def test_demo_data_is_deterministic_and_seed_dependent():
    assert generate(3, 10, seed=1) == generate(3, 10, seed=1)
    assert generate(3, 10, seed=1) != generate(3, 10, seed=2)


def test_demo_data_passes_strict_validation(demo_raw):
    dialogs, report, problems = clean(demo_raw)
    assert problems == []
    assert report["dialogues_kept"] == 6 * 20


def test_demo_statistics_near_published():
    _, routines, sessions = generate(60, 50, seed=0)
    stats = statistics(routines, sessions)
    assert stats["sessions_per_persona"] == 50
    for key, tolerance in [("routines_per_persona", 0.4), ("triggers_per_routine", 0.1),
                           ("devices_per_routine", 0.3), ("actions_per_routine", 0.8),
                           ("messages_per_session", 1.0), ("routine_driven_share", 0.05)]:
        assert abs(stats[key] - PUBLISHED[key]) <= tolerance, (key, stats[key])


def test_characters_distinct_and_messages_alternate(demo_rows):
    characters, _, sessions = demo_rows
    texts = [c["character"] for c in characters]
    assert len(set(texts)) == len(texts)
    for row in sessions:
        for session in row["sessions"]:
            roles = [m["role"] for m in session["messages"]]
            assert roles[0] == "user"
            assert all(a != b for a, b in zip(roles, roles[1:]))
            assert all(m["text"] == m["text"].strip() and m["text"] for m in session["messages"])


def test_routine_sessions_agree_with_their_routine_and_spontaneous_do_not(demo_rows):
    _, routines, sessions = demo_rows
    spontaneous = 0
    for r_row, s_row in zip(routines, sessions):
        for session in s_row["sessions"]:
            if session["applied_routines"]:
                routine = r_row["routines"][session["applied_routines"][0]]
                assert triggers_match(routine["triggers"], session["meta"])
                text = " ".join(m["text"] for m in session["messages"] if m["role"] == "assistant")
                for device, params in active_actions(routine["actions"]).items():
                    for param, value in params.items():
                        if param != "armed":  # stated as "armed"/"disarmed"
                            assert str(value) in text, (device, param, value, text)
            else:
                spontaneous += 1
                assert not any(triggers_match(r["triggers"], session["meta"]) for r in r_row["routines"])
    assert spontaneous > 0


# ------------------------------------------------------------ clean_data
def test_clean_cli_writes_dialogues_and_report(demo_raw, tmp_path):
    out = tmp_path / "cleaned" / "dialogs_clean.jsonl"
    result = run_script("clean_data.py", "--raw_dir", demo_raw, "--output", out)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 120
    assert rows[0]["persona_id"] == "persona_000" and rows[-1]["persona_id"] == "persona_005"
    assert set(rows[0]) == {"persona_id", "session_id", "character", "routines", "meta", "applied_routines", "messages"}
    report = json.loads((out.parent / "cleaning_report.json").read_text())
    assert report["dialogues_kept"] == 120 and report["problems"] == []


def _mutate(demo_rows, file, mutation):
    rows = copy.deepcopy(list(demo_rows))
    index = {"characters": 0, "routines": 1, "sessions": 2}[file]
    mutation(rows[index])
    return rows


def _set(path_fn, value):
    def apply(rows):
        obj, key = path_fn(rows)
        obj[key] = value
    return apply


def _session(rows, k=1, s=2):
    return rows[k]["sessions"][s]


BAD_RECORDS = {
    "unknown role": ("sessions", 2, _set(lambda r: (_session(r)["messages"][0], "role"), "bot"), "unknown role"),
    "text not a string": ("sessions", 2, _set(lambda r: (_session(r)["messages"][1], "text"), 42), "not a string"),
    "missing field": ("sessions", 2, lambda r: _session(r).pop("meta"), "missing field 'meta'"),
    "bad meta value": ("sessions", 2, _set(lambda r: (_session(r)["meta"], "weather"), "foggy"), "weather"),
    "applied index out of range": ("sessions", 2, _set(lambda r: (_session(r), "applied_routines"), [9]), "out of range"),
    "unknown device": ("routines", 2, _set(lambda r: (r[1]["routines"][0]["actions"], "fridge"), {"temp": 3}), "unknown device"),
    "unknown parameter": ("routines", 2, _set(lambda r: (r[1]["routines"][0]["actions"], "tv"), {"hue": 3}), "unknown parameter"),
    "value outside schema": ("routines", 2, _set(lambda r: (r[1]["routines"][0]["actions"], "ac"), {"temperature": 45}), "outside 16..30"),
    "character not a string": ("characters", 2, _set(lambda r: (r[1], "character"), ["x"]), "not a string"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_bad_record_is_refused_with_file_and_line(case, demo_rows, tmp_path):
    file, line, mutation, message = BAD_RECORDS[case]
    raw = write_raw(tmp_path / "raw", *_mutate(demo_rows, file, mutation))
    out = tmp_path / "out" / "clean.jsonl"
    result = run_script("clean_data.py", "--raw_dir", raw, "--output", out)
    assert result.returncode == 2
    assert f"{file}.jsonl:{line}:" in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert not out.parent.exists()


def test_lenient_keeps_good_records(demo_rows, tmp_path):
    rows = _mutate(demo_rows, "sessions", _set(lambda r: (_session(r)["messages"][0], "role"), "bot"))
    rows[0][3]["character"] = 7  # drops persona 3 whole
    raw = write_raw(tmp_path / "raw", *rows)
    out = tmp_path / "out" / "clean.jsonl"
    result = run_script("clean_data.py", "--raw_dir", raw, "--output", out, "--lenient")
    assert result.returncode == 0, result.stderr
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(kept) == 120 - 1 - 20
    assert "persona_003" not in {d["persona_id"] for d in kept}
    assert sum(d["persona_id"] == "persona_001" for d in kept) == 19
    assert "sessions.jsonl:2:" in result.stderr and "characters.jsonl:4:" in result.stderr


def test_file_level_problems(demo_raw, tmp_path):
    out = tmp_path / "o.jsonl"
    (demo_raw / "routines.jsonl").write_text("\n".join((demo_raw / "routines.jsonl").read_text().splitlines()[:-1]) + "\n")
    result = run_script("clean_data.py", "--raw_dir", demo_raw, "--output", out)
    assert result.returncode == 2 and "not line-aligned" in result.stderr

    (demo_raw / "routines.jsonl").write_text("")
    result = run_script("clean_data.py", "--raw_dir", demo_raw, "--output", out)
    assert result.returncode == 2 and "empty file" in result.stderr

    (demo_raw / "routines.jsonl").unlink()
    result = run_script("clean_data.py", "--raw_dir", demo_raw, "--output", out)
    assert result.returncode == 2 and "routines.jsonl: file not found" in result.stderr
    assert not out.exists()


def test_bad_json_and_bad_utf8_name_the_line(demo_raw, tmp_path):
    lines = (demo_raw / "characters.jsonl").read_text().splitlines()
    lines[3] = '{"character": "unterminated'
    (demo_raw / "characters.jsonl").write_text("\n".join(lines) + "\n")
    result = run_script("clean_data.py", "--raw_dir", demo_raw, "--output", tmp_path / "o.jsonl")
    assert result.returncode == 2 and "characters.jsonl:4: invalid JSON" in result.stderr

    data = (demo_raw / "sessions.jsonl").read_bytes().split(b"\n")
    data[2] = data[2].replace(b"Thank", b"Th\xff\xfeank", 1) if b"Thank" in data[2] else data[2] + b"\xff"
    (demo_raw / "sessions.jsonl").write_bytes(b"\n".join(data))
    result = run_script("clean_data.py", "--raw_dir", demo_raw, "--output", tmp_path / "o.jsonl")
    assert result.returncode == 2 and "sessions.jsonl:3: not UTF-8" in result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_existing_output_survives_a_failed_run(demo_raw, demo_rows, tmp_path):
    out = tmp_path / "o.jsonl"
    out.write_text("previous\n")
    (demo_raw / "sessions.jsonl").write_text("not json\n" * 6)
    assert run_script("clean_data.py", "--raw_dir", demo_raw, "--output", out).returncode == 2
    assert out.read_text() == "previous\n"


def test_whitespace_normalised_empty_and_degenerate_dropped(demo_rows, tmp_path):
    characters, routines, sessions = copy.deepcopy(list(demo_rows))
    s0 = sessions[0]["sessions"]
    s0[0]["messages"][0]["text"] = "  Hello \n\t there  "
    s0[0]["messages"].insert(1, {"role": "user", "text": "   "})
    s0[1]["messages"] = [m for m in s0[1]["messages"] if m["role"] == "user"]
    dialogs, report, problems = clean(write_raw(tmp_path / "raw", characters, routines, sessions))
    assert problems == []
    assert dialogs[0]["messages"][0]["text"] == "Hello there"
    assert report["empty_messages_dropped"] == 1 and report["degenerate_dialogues_dropped"] == 1
    assert len(dialogs) == 119


def test_real_sample_messages_survive_cleaning(sample_dialogues, tmp_path):
    meta = {name: values[0] for name, values in TRIGGERS.items()}
    characters = [{"character": f"Persona {d['persona_id']}"} for d in sample_dialogues]
    routines = [{"routines": []} for _ in sample_dialogues]
    sessions = [{"sessions": [{"session_id": d["session_index"], "meta": meta, "applied_routines": None,
                               "session_summarization": None,
                               "messages": [{"role": m["role"], "text": f"  {m['text']}\n"} for m in d["messages"]]}]}
                for d in sample_dialogues]
    dialogs, _, problems = clean(write_raw(tmp_path / "raw", characters, routines, sessions))
    assert problems == []
    assert [d["messages"] for d in dialogs] == [
        [{"role": m["role"], "text": " ".join(m["text"].split())} for m in d["messages"]] for d in sample_dialogues]
    assert dialogs[0]["messages"][0]["text"] == sample_dialogues[0]["messages"][0]["text"]


# ------------------------------------------------------------ create_splits
@pytest.fixture()
def cleaned(demo_raw):
    return clean(demo_raw)[0]


def test_splits_disjoint_complete_temporal_deterministic(cleaned):
    splits = make_splits(cleaned)
    report = split_report(splits, cleaned)
    assert report["no_overlap"] and report["complete"] and report["temporal_order"] and report["online_within_train"]
    assert report["per_persona_min_max"] == {"train": [12, 12], "val": [4, 4], "test": [4, 4]}
    assert splits["persona_002"]["test"] == list(range(56, 60))
    assert splits["persona_002"]["online"] == list(range(47, 52))
    assert make_splits(cleaned) == splits


def test_splits_follow_session_order_not_file_order(cleaned):
    shuffled = cleaned[::-1]
    splits = make_splits(shuffled)
    assert split_report(splits, shuffled)["temporal_order"]
    assert [shuffled[i]["session_id"] for i in splits["persona_000"]["test"]] == [16, 17, 18, 19]


def test_too_few_dialogues_is_a_clear_error(cleaned, tmp_path):
    path = tmp_path / "few.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in cleaned[:5]))
    result = run_script("create_splits.py", "--input", path, "--output", tmp_path / "s.json")
    assert result.returncode == 2 and "persona_000 (5)" in result.stderr and "Traceback" not in result.stderr
    result = run_script("create_splits.py", "--input", path, "--output", tmp_path / "s.json", "--min_dialogues", "5")
    assert result.returncode == 0, result.stderr
    splits = json.loads((tmp_path / "s.json").read_text())
    assert set(splits) == {"persona_000"}  # the documented format: persona id -> its index lists, nothing else
    assert [len(splits["persona_000"][k]) for k in ("train", "val", "test")] == [3, 1, 1]
    report = json.loads((tmp_path / "split_report.json").read_text())
    assert report["complete"] and report["ratios"] == [0.6, 0.2, 0.2] and report["source"] == str(path)


def test_download_without_network_fails_in_one_line(tmp_path):
    env_result = run_script_env("download_data.py", "--out_dir", tmp_path / "raw")
    assert env_result.returncode == 2
    lines = env_result.stderr.strip().splitlines()
    assert len(lines) == 1 and "copy characters.jsonl" in lines[0]


def run_script_env(name, *args):
    import subprocess
    import sys

    from conftest import ROOT
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, env=env)
