"""Session-level routine knowledge: does the model state this user's routine values before the user does?

In the real data the user states most values and the assistant mostly asks back, so scores
against the reference reply reward echoing the user. This metric's denominator comes from the
data, never from the reply:

- The settings of a routine-driven session are the (device, parameter, value) triples of its
  applied routine (`prescribed_settings`) on the devices the session talks about.
- A setting is *open* at an assistant turn while its value is still unknown from the dialogue: no
  message before the turn states any value for that device and parameter (user or assistant,
  statement or question: "your usual 22 degrees?" closes it too). It is *testable* at an open turn
  at which its device has come up (in the history or the reference reply), and it counts in a
  session when it is testable at one or more of the session's evaluated turns.
- Each counted setting is scored once, by the first value a reply states for it at an open turn
  (also before its device comes up: volunteering the user's AC setting while talking about the
  lights is memory too): a hit
  when that value is the routine's, a wrong otherwise; later statements are ignored. So varying
  guesses earn nothing over a consistent one (stating A then B scores exactly as A twice), and
  repeating what the dialogue already said earns nothing at all.
- routine recall = hits / settings; precision = hits / (hits + wrongs); routine F1 = their
  harmonic mean = 2 hits / (settings + hits + wrongs), 0 when nothing is stated.

Counts are pooled per persona (a session evaluated under several training seeds counts once per
seed, each with its own first statements), then averaged over personas (macro). Silence scores 0,
and so does an echo of the user or of the assistant, which only repeats values that are closed.

The reference policies (arm_registry: kind POLICY) need no model: `silent` says "Okay.", `echo` repeats the
user's last message, `echo_assistant` the assistant's last message, `rotate_usual` states the
population's three most common values for the devices talked about, rotating through them turn
by turn (a hedger: what varying guesses score), `oracle` states the applied routine's settings for every device talked about
so far, the reference reply included (perfect memory, reading the reference to know the devices).
`user_usual` and `everyone_usual` state, for those devices, the values this user's (everyone's)
train sessions' routines set most often: memory of the user's habits without the session's
context, against the population's habits. Their gap is the most a context-blind per-user memory
can gain over a unified one on this metric.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass

from adaptcommand.evaluation.action_metrics import prescribed_settings

DEVICE_NAMES = {"tv": "TV", "ac": "AC", "lights": "lights", "speaker": "speaker", "security": "security system"}


@dataclass(frozen=True)
class Setting:
    device: str
    param: str
    value: object
    open_turns: tuple      # assistant message indices at which the value is unknown from the dialogue
    testable_turns: tuple  # those of them at which the setting's device has come up

    @property
    def key(self):
        return f"{self.device}.{self.param}"


def message_actions(dialog, extract):
    """The actions of every message of a dialogue, each read with the messages before it."""
    messages = dialog["messages"]
    return [extract(m["text"], messages[:k]) for k, m in enumerate(messages)]


def session_settings(dialog, actions):
    """The Settings of a dialogue with at least one testable turn (actions: `message_actions`); [] for a
    spontaneous one."""
    prescribed = prescribed_settings(dialog.get("meta"), dialog.get("routines") or [], dialog.get("applied_routines"))
    if not prescribed:
        return []
    messages = dialog["messages"]
    settings = []
    for device, params in prescribed.items():
        first_mention = next((k for k, a in enumerate(actions) if device in a), None)
        if first_mention is None:
            continue  # the session never talks about this device
        for param, value in params.items():
            stated = next((k for k, a in enumerate(actions) if param in a.get(device, {})), len(messages))
            open_turns = tuple(k for k, m in enumerate(messages) if m["role"] == "assistant" and k <= stated)
            testable = tuple(k for k in open_turns if k >= first_mention)
            if testable:
                settings.append(Setting(device, param, value, open_turns, testable))
    return settings


def turn_knowledge(settings, turn_index, predicted):
    """{routine_testable, routine_hits, routine_wrongs}: the setting keys testable at this turn, and
    those open at it that the predicted reply states rightly / wrongly."""
    stated = [s for s in settings if turn_index in s.open_turns and s.param in predicted.get(s.device, {})]
    return {"routine_testable": [s.key for s in settings if turn_index in s.testable_turns],
            "routine_hits": [s.key for s in stated if predicted[s.device][s.param] == s.value],
            "routine_wrongs": [s.key for s in stated if predicted[s.device][s.param] != s.value]}


def knowledge_counts(records):
    """(settings, hits, wrongs) of some turn records, pooled over their sessions.

    A session is a dialogue under one training seed. Its settings are those testable at one or
    more of its evaluated turns; each is a hit or a wrong by the first reply, in turn order, that
    states a value for it at an open turn, and later replies do not change that.
    """
    sessions = defaultdict(list)
    for r in records:
        if r.get("knowledge") is not None:
            sessions[(r.get("seed"), r["dialog_index"])].append(r)
    n = hits = wrongs = 0
    for session in sessions.values():
        session.sort(key=lambda r: r["turn_index"])
        outcome = {key: None for r in session for key in r["knowledge"]["routine_testable"]}
        for r in session:
            k = r["knowledge"]
            for key in k["routine_hits"]:
                if key in outcome:
                    outcome[key] = outcome[key] or "hit"
            for key in k["routine_wrongs"]:
                if key in outcome:
                    outcome[key] = outcome[key] or "wrong"
        n += len(outcome)
        hits += sum(v == "hit" for v in outcome.values())
        wrongs += sum(v == "wrong" for v in outcome.values())
    return n, hits, wrongs


def knowledge_metrics(records):
    """routine recall / precision / F1 of some turn records (None where undefined)."""
    n, hits, wrongs = knowledge_counts(records)
    return {"routine_settings": n,
            "routine_recall": hits / n if n else None,
            "routine_precision": hits / (hits + wrongs) if hits + wrongs else None,
            "routine_f1": 2 * hits / (n + hits + wrongs) if n else None}


# ------------------------------------------------------------ reference policies (no model)
def _value_text(device, param, value):
    if param == "temperature":
        return f"{value} degrees"
    if param == "fan_speed":
        return f"fan speed {value}"
    if param == "armed":
        return "armed" if value else "disarmed"
    if param == "alarm_volume":
        return f"alarm volume {value}"
    if param in ("volume", "brightness"):
        return f"{param} {value}"
    if param == "mode":
        return f"{value} mode"
    if param == "color":
        return f"{value} color"
    if param == "equalizer":
        return f"{value} equalizer"
    return f"input {value}"


def describe_settings(settings):
    """'Setting the AC to 22 degrees, heat mode. Setting the lights to brightness 40.' for {device: {param: value}}."""
    sentences = [f"Setting the {DEVICE_NAMES[device]} to "
                 + ", ".join(_value_text(device, p, v) for p, v in sorted(params.items())) + "."
                 for device, params in settings.items() if params]
    return " ".join(sentences) or "Okay."


EVERYONE = "*"
HABIT_POLICIES = ("user_usual", "everyone_usual", "rotate_usual")  # the policies that read `usual_settings`
ROTATED = 3  # rotate_usual cycles through the population's this many most common values


def usual_settings(dialogs, train_indices_by_persona):
    """{persona (and EVERYONE): {device: {param: [values]}}}: the values each (device, param) had in the
    routines of that persona's (all personas') train sessions, most frequent first (ties: smaller first)."""
    counts = defaultdict(lambda: defaultdict(Counter))
    for persona, indices in train_indices_by_persona.items():
        for i in indices:
            d = dialogs[i]
            for device, params in (prescribed_settings(d.get("meta"), d.get("routines") or [], d.get("applied_routines")) or {}).items():
                for param, value in params.items():
                    for who in (persona, EVERYONE):
                        counts[who][(device, param)][value] += 1
    usual = {}
    for who, by_key in counts.items():
        for (device, param), values in sorted(by_key.items()):
            ranked = sorted(values, key=lambda v: (-values[v], v))
            usual.setdefault(who, {}).setdefault(device, {})[param] = ranked
    return usual


def _last_text(messages, role):
    return next((m["text"] for m in reversed(messages) if m["role"] == role), "Okay.")


def policy_reply(arm, dialog, turn_index, actions, usual=None):
    """The reply of a reference policy at an assistant turn (actions: `message_actions` of the dialogue;
    usual: `usual_settings` of the train split, for the user_usual, everyone_usual and rotate_usual policies)."""
    messages = dialog["messages"][:turn_index]
    if arm == "silent":
        return "Okay."
    if arm == "echo":
        return _last_text(messages, "user")
    if arm == "echo_assistant":
        return _last_text(messages, "assistant")
    if arm == "oracle":
        settings = prescribed_settings(dialog.get("meta"), dialog.get("routines") or [], dialog.get("applied_routines"))
    else:
        ranked = (usual or {}).get(dialog["persona_id"] if arm == "user_usual" else EVERYONE, {})
        pick = (turn_index // 2) % ROTATED if arm == "rotate_usual" else 0
        settings = {d: {p: values[pick % len(values)] for p, values in ps.items()} for d, ps in ranked.items()}
    talked = {d for a in actions[: turn_index + 1] for d in a}
    return describe_settings({d: ps for d, ps in (settings or {}).items() if d in talked})
