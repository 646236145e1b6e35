"""The demo data talks like the real data (wording rates), and its dials do what they say."""

import pytest
from conftest import run_script

from adaptcommand.data.demo_data import WordingOptions, generate
from adaptcommand.data.schema import active_actions
from adaptcommand.evaluation.action_metrics import ActionExtractor
from adaptcommand.evaluation.wording import identity_accuracy, opening_excerpts, trigram_variety, wording_rates

extract = ActionExtractor().extract_actions


def rates_of(options=WordingOptions(), personas=20, sessions=50, seed=0):
    _, _, rows = generate(personas, sessions, seed, options)
    return wording_rates(opening_excerpts(rows))


@pytest.fixture(scope="module")
def real_rates(sample_dialogues):
    return wording_rates([d["messages"] for d in sample_dialogues])


def test_real_sample_rates_are_what_facts_md_measured(real_rates):
    """FACTS.md section 4 (and the hidden set within 0.03): the extractor reads the sample this way."""
    assert real_rates.question == pytest.approx(0.70, abs=0.03)
    assert 0.04 <= real_rates.unstated_value <= 0.09
    assert real_rates.no_action <= 0.05 and real_rates.usual == 0.0
    assert 0.45 <= real_rates.trigram_variety <= 0.56


@pytest.mark.parametrize("seed", [0, 1])
def test_default_demo_talks_at_the_real_rates(real_rates, seed):
    """Within 35% relative or 0.10 absolute of the real sample, on two seeds."""
    demo = rates_of(seed=seed)
    for key in ("question", "unstated_value", "no_action", "usual", "trigram_variety"):
        real, ours = getattr(real_rates, key), getattr(demo, key)
        assert abs(ours - real) <= max(0.35 * real, 0.10), (key, ours, real)


def test_rates_are_counted_as_documented():
    dialogue = [{"role": "user", "text": "Could you adjust the lights?"},
                {"role": "assistant", "text": "What brightness would you like?"},
                {"role": "user", "text": "Set it to 40."},
                {"role": "assistant", "text": "Lights at 40% brightness and a warm color."},
                {"role": "user", "text": "Play the usual music, please."}]
    rates = wording_rates([dialogue])
    assert rates.question == 0.5          # one of two assistant messages asks
    assert rates.unstated_value == 0.5    # "warm" was never said by the user; 40 was
    assert rates.no_action == 0.0         # "music" is the speaker
    assert rates.usual == pytest.approx(1 / 3)
    assert trigram_variety(["a b c a b c"]) == pytest.approx(3 / 4)


def test_identity_cues_none_hides_who_is_speaking():
    """Nearest centroid on word counts, 20 personas: no better than chance + 0.10 with none; more with cues."""
    accuracy = {}
    for cues in ("none", "real", "strong"):
        _, _, rows = generate(20, 50, 0, WordingOptions(identity_cues=cues))
        accuracy[cues] = identity_accuracy(rows)
    assert accuracy["none"] <= 1 / 20 + 0.10
    assert accuracy["none"] < accuracy["real"] < accuracy["strong"]
    assert accuracy["strong"] >= 0.2, accuracy


def test_identity_accuracy_needs_both_splits():
    _, _, rows = generate(2, 1, 0)  # one session each: no train split
    assert identity_accuracy(rows) is None
    _, _, rows = generate(2, 5, 0)
    assert 0.0 <= identity_accuracy(rows) <= 1.0


def test_identity_cues_none_shares_voices_and_activities():
    characters, _, rows = generate(8, 30, 0, WordingOptions(identity_cues="none"))
    hobbies = [c["character"].split(" loves ")[1].split(" and ")[0] for c in characters]
    user_text = [" ".join(m["text"] for s in row["sessions"] for m in s["messages"] if m["role"] == "user") for row in rows]
    # a persona's own first hobby shows up no more in its own messages than in everyone else's
    own = sum(text.count(h) for h, text in zip(hobbies, user_text))
    others = sum(text.count(h) for h in hobbies for text in user_text) - own
    assert own <= 2 * others / (len(hobbies) - 1) + 3


def test_proactive_share_is_how_often_open_settings_are_volunteered():
    """0: the assistant always asks for what the user left open; 1: it always states the routine's values."""
    never, always = rates_of(WordingOptions(proactive_share=0.0)), rates_of(WordingOptions(proactive_share=1.0))
    assert never.unstated_value <= 0.01
    assert always.unstated_value >= 0.3 and always.question < never.question
    _, routines, rows = generate(6, 30, 3, WordingOptions(proactive_share=1.0))
    volunteered = 0
    for r_row, s_row in zip(routines, rows):
        for session in s_row["sessions"]:
            if not session["applied_routines"]:
                continue
            routine = active_actions(r_row["routines"][session["applied_routines"][0]]["actions"])
            messages = session["messages"]
            for k in range(1, len(messages), 2):
                asked = extract(messages[k - 1]["text"], messages[:k - 1])
                for device, params in asked.items():
                    if device in routine and set(params) < set(routine[device]):  # the request left values open
                        assert extract(messages[k]["text"], messages[:k]).get(device) == routine[device]
                        volunteered += 1
    assert volunteered >= 30


def test_shared_preferences_gives_every_user_the_same_routines():
    _, routines, rows = generate(5, 10, 0, WordingOptions(shared_preferences=True))
    assert all(r == routines[0] for r in routines)
    _, own, _ = generate(5, 10, 0)
    assert any(r != own[0] for r in own[1:])
    assert len({m["text"] for s in rows[0]["sessions"] for m in s["messages"]}) > 20  # sessions still vary


def test_report_cli_prints_rates_beside_the_real_sample(sample_dialogues, tmp_path):
    result = run_script("make_demo_data.py", "--personas", 6, "--sessions", 20, "--report")
    assert result.returncode == 0, result.stderr
    line = next(l for l in result.stdout.splitlines() if l.startswith("assistant messages that ask a question"))
    real, demo = map(float, line.split()[-2:])
    assert real == pytest.approx(0.70, abs=0.01) and 0.4 <= demo <= 0.95
    assert "persona identified from wording" in result.stdout
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("args,message", [
    (["--report", "--real_sample", "no/such.jsonl"], "no/such.jsonl: real sample not found"),
    (["--report", "--proactive_share", "1.5"], "--proactive_share must be between 0 and 1"),
    (["--personas", "3"], "give --out_dir"),
    (["--report", "--identity_cues", "loud"], "invalid choice: 'loud'"),
])
def test_report_cli_errors_are_one_line(args, message):
    result = run_script("make_demo_data.py", *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr
