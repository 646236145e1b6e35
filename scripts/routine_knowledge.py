"""Session-level routine knowledge: does the model state this user's routine values before the user does?

In the real data the user states most values and the assistant mostly asks back, so scores
against the reference reply reward echoing the user. This metric's denominator comes from the
data, never from the reply:

- The settings of a routine-driven session are the (device, parameter, value) triples of its
  applied routine (`prescribed_settings`) on the devices the session talks about.
- A setting is *open* at every assistant turn before the user first states a value for that
  device and parameter (any value: then it is known from the dialogue). It is *testable* when it
  is open at one or more assistant turns at which its device has been talked about (in the
  history or the reference reply): only those settings count, so a perfect memory can reach 1.
- hit: a predicted reply at an open turn states the setting's value; wrong: one states another
  value for that device and parameter (a setting may be both).
- routine recall = hits / settings; precision = hits / (hits + wrongs); routine F1 = their
  harmonic mean = 2 hits / (settings + hits + wrongs), 0 when nothing is stated.

Counts are pooled per persona, then averaged over personas (macro). Silence scores 0, and so does
an echo of the user, which only repeats values after they stop being open.

The reference policies (config.POLICY_ARMS) need no model: `silent` says "Okay.", `echo` repeats the
user's last message, `oracle` states the applied routine's settings for every device talked about
so far, the reference reply included (perfect memory, reading the reference to know the devices).
`user_usual` and `everyone_usual` state, for those devices, the values this user's (everyone's)
train sessions' routines set most often: memory of the user's habits without the session's
context, against the population's habits. Their gap is the most a context-blind per-user memory
can gain over a unified one on this metric.
"""

from collections import Counter, defaultdict
from dataclasses import dataclass

from scripts.action_metrics import prescribed_settings

DEVICE_NAMES = {"tv": "TV", "ac": "AC", "lights": "lights", "speaker": "speaker", "security": "security system"}


@dataclass(frozen=True)
class Setting:
    device: str
    param: str
    value: object
    open_turns: tuple  # assistant message indices at which the setting is open

    @property
    def key(self):
        return f"{self.device}.{self.param}"


def message_actions(dialog, extract):
    """The actions of every message of a dialogue, each read with the messages before it."""
    messages = dialog["messages"]
    return [extract(m["text"], messages[:k]) for k, m in enumerate(messages)]


def session_settings(dialog, actions):
    """The testable Settings of a dialogue (actions: `message_actions`), [] for a spontaneous one."""
    prescribed = prescribed_settings(dialog.get("meta"), dialog.get("routines") or [], dialog.get("applied_routines"))
    if not prescribed:
        return []
    messages = dialog["messages"]
    settings = []
    for device, params in prescribed.items():
        mentions = [k for k, a in enumerate(actions) if device in a]
        if not mentions:
            continue  # the session never talks about this device
        for param, value in params.items():
            stated = next((k for k, m in enumerate(messages) if m["role"] == "user" and param in actions[k].get(device, {})),
                          len(messages))
            open_turns = tuple(k for k, m in enumerate(messages) if m["role"] == "assistant" and k < stated)
            if any(k >= mentions[0] for k in open_turns):
                settings.append(Setting(device, param, value, open_turns))
    return settings


def turn_knowledge(settings, turn_index, predicted):
    """{routine_settings, routine_hits, routine_wrongs} setting keys for one predicted reply.

    routine_settings (the session's, the same on each of its turns) lets a run's records be
    pooled per session without the dialogue at hand.
    """
    hits, wrongs = [], []
    for s in settings:
        if turn_index in s.open_turns and s.param in predicted.get(s.device, {}):
            (hits if predicted[s.device][s.param] == s.value else wrongs).append(s.key)
    return {"routine_settings": [s.key for s in settings], "routine_hits": hits, "routine_wrongs": wrongs}


def knowledge_counts(records):
    """(settings, hits, wrongs) pooled over the sessions of some turn records."""
    sessions = {}
    for r in records:
        k = r.get("knowledge")
        if k is None:
            continue
        entry = sessions.setdefault(r["dialog_index"], (set(k["routine_settings"]), set(), set()))
        entry[1].update(k["routine_hits"])
        entry[2].update(k["routine_wrongs"])
    return (sum(len(s) for s, _, _ in sessions.values()), sum(len(h) for _, h, _ in sessions.values()),
            sum(len(w) for _, _, w in sessions.values()))


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


def usual_settings(dialogs, train_indices_by_persona):
    """{persona (and EVERYONE): {device: {param: value}}}: the value each (device, param) had most
    often in the routines of that persona's (all personas') train sessions; ties go to the smaller value."""
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
            top = max(values.values())
            usual.setdefault(who, {}).setdefault(device, {})[param] = min(v for v, n in values.items() if n == top)
    return usual


def policy_reply(arm, dialog, turn_index, actions, usual=None):
    """The reply of a reference policy at an assistant turn (actions: `message_actions` of the dialogue;
    usual: `usual_settings` of the train split, for the user_usual and everyone_usual policies)."""
    messages = dialog["messages"]
    if arm == "silent":
        return "Okay."
    if arm == "echo":
        return next((m["text"] for m in reversed(messages[:turn_index]) if m["role"] == "user"), "Okay.")
    if arm == "oracle":
        settings = prescribed_settings(dialog.get("meta"), dialog.get("routines") or [], dialog.get("applied_routines"))
    else:
        settings = (usual or {}).get(dialog["persona_id"] if arm == "user_usual" else EVERYONE, {})
    talked = {d for a in actions[: turn_index + 1] for d in a}
    return describe_settings({d: ps for d, ps in (settings or {}).items() if d in talked})
