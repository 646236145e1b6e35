"""Smart-home actions in a message, and how well predicted actions match the reference.

Extraction
----------
`ActionExtractor().extract_actions(text, context=None) -> {device: {param: value}}` returns the
devices a message acts on (requested, proposed, confirmed or asked about) and the parameter values
stated for them, normalised to the schema in adaptcommand/data/schema.py (ints, canonical categories such
as "warm", "bass boost", "HDMI1", armed True/False). A device with no stated value maps to {}.

- Device words match on word boundaries with the dataset's vocabulary (AC / air conditioning /
  heating / thermostat, lights / lamp, TV / television, speaker / music / radio, security / alarm /
  arm / disarm), so "arm" never matches inside "warm" nor "ac" inside "place".
- A mention counts only in a sentence with an action cue (a request, a setting verb, a question,
  a confirmation, or a stated value): "I'm watching TV" is not an action.
- A value whose device is not named goes to the only device that has that parameter ("heat mode",
  "fan speed 2" -> ac; "treble boost" -> speaker). Ambiguous parameters (volume, brightness) go to
  the nearest mention of a device that has them, else to the device the dialogue is about.
- `context` (earlier messages, strings or {"role", "text"} dicts) supplies that dialogue state:
  "Let's keep it at 50" after talking about the lights -> lights brightness 50.

Metrics (`ActionMetrics`)
-------------------------
`compare_actions(pred, ref)` returns counts for one turn; `aggregate(counts)` sums them over a run
(micro) and divides:
- device precision = |Dp ∩ Dr| / |Dp|, recall = |Dp ∩ Dr| / |Dr|, F1 = 2tp / (2tp + fp + fn) (their
  harmonic mean, and 0 when nothing is predicted but something was expected), where Dp, Dr are
  the sets of devices in prediction and reference;
- parameter precision/recall/F1: the same over (device, param, value) triples, so a parameter
  counts as right only with the right value;
- numerical: over (device, param) pairs present in both with integer values: exact share,
  within-±1 share (as the earlier attempt counted) and mean absolute error;
- categorical: over pairs present in both with category/bool values: share equal;
- coverage: numerical_coverage / categorical_coverage = those pairs / the reference's pairs of that kind.
A ratio whose denominator is 0 is None (undefined), never 0. `macro(counts_by_group)` averages the
per-group (per-persona) figures over the groups where they are defined.

Given and private values
------------------------
`compare_actions(pred, ref, given)` also splits the parameter counts by whether a triple's value
was stated by the user earlier in the dialogue (`given`: echoing can score there) or not
(`private`: only knowing the user can): param_given_* and param_private_* precision/recall/F1.
Numerical and categorical accuracy come with their coverage: the share of the reference's
numeric (categorical) pairs that the prediction states at all.

Routine knowledge, the study's primary metric, is session-level: adaptcommand/evaluation/routine_knowledge.py.
"""

import re

from adaptcommand.data.schema import DEVICES, active_actions, triggers_match

PARAM_DEVICES = {}
for _device, _params in DEVICES.items():
    for _param in _params:
        PARAM_DEVICES.setdefault(_param, []).append(_device)

DEVICE_PATTERNS = {
    "tv": r"\b(?:tv|tvs|television|telly)\b",
    "ac": r"\b(?:ac|a/c|air[\s-]?con(?:ditioning|ditioner)?|aircon|thermostat|heating|heater|climate control|the heat|(?:heat|cool|warm)(?:\s+(?:up|down))?\s+(?:the|this)\s+(?:room|place|house|apartment|flat|studio|cottage))\b",
    "lights": r"\b(?:lights?|lighting|lamps?)\b(?!\s+(?:rain|drizzle|snow|breeze|wind|jacket|sweater|snack|meal|lunch|dinner|breakfast|jazz|music|reading|workout|shower|layer|blanket|outside))",
    "speaker": r"\b(?:speakers?|music|radio|sound system|stereo|tunes|playlist)\b",
    "security": r"\b(?:security|alarm(?!\s+clock)|arm|armed|arming|disarm|disarmed|disarming)\b",
}
NOT_DEVICE = r"\b(?:sun|day|moon|candle|natural|morning|evening|street)\s*light\b"
CUE = re.compile(
    r"\b(?:set|sets|setting|turn|turned|turning|switch|switched|switching|adjust\w*|change\w*|dim|dimmed|dimming|"
    r"brighten\w*|raise|lower|lowering|increase\w*|decrease\w*|reduce|boost|crank|bump|play|playing|put|"
    r"make|start|activate\w*|deactivate\w*|enable\w*|disable\w*|arm|armed|disarm\w*|mute|unmute|keep|tune|"
    r"could you|can you|would you|will you|please|i'd like|i would like|i want|i need|let's|how about|"
    r"go with|what|which|done|now|has been|have been|i've|i'll|you'd like|do you|shall i|should i|okay|ok|"
    r"too (?:loud|quiet|bright|dim|dark|hot|cold|warm|harsh|chilly|cool))\b")
PRONOUN_OBJECT = re.compile(r"\b(?:set|turn|switch|adjust|dim|brighten|raise|lower|change|make|keep|put|crank|bump|"
                            r"boost|increase|decrease|reduce|tweak)\s+(?:it|them|'em)\b")
PARAM_WORDS = [  # (regex, param) in priority order: "alarm volume" before "volume"
    (r"alarm\s+volume", "alarm_volume"), (r"fan\s+speed|fan|speed", "fan_speed"), (r"volume|loudness|loud|louder|quiet|quieter", "volume"),
    (r"brightness", "brightness"), (r"temperature|temp", "temperature"), (r"equali[sz]er|\beq", "equalizer"),
    (r"input(?:\s+source)?|source", "input_source"), (r"colou?r", "color"),
]
CONNECT = r"(?:\s*(?:is|are|now|set|to|at|of|on|level|setting|be|been|has|will|should|around|about|up|down|back|exactly|just|like|maybe|:|=|-))*"
NUMBER = r"(?P<n>\d{1,3})(?![\d,]*\.\d)(?:\s*(?P<pct>%|percent))?"
KEYWORD_NUMBER = re.compile(r"\b(?P<kw>" + "|".join(w for w, _ in PARAM_WORDS[:5]) + r")\b" + CONNECT + r"\s*" + NUMBER + r"(?![\w'])")
NUMBER_KEYWORD = re.compile(r"(?<![\w'.])" + NUMBER + r"\s*(?:of\s+)?(?P<kw>alarm\s+volume|fan\s+speed|brightness|volume)\b")
DEGREES = re.compile(r"(?<![\w'.])(?P<n>\d{1,3})\s*(?:degrees?|°\s*[cf]?|º\s*[cf]?)(?!\w)")
BARE = re.compile(r"(?:^|\b(?P<before>to|at|it|with|about|around|is|be|like|think|maybe|say|make|keep|of|go)\s+)" + NUMBER + r"(?![\w'/:]|\.\d)")
INPUTS = [(r"\bhdmi\s*-?\s*1\b", "HDMI1"), (r"\bhdmi\s*-?\s*2\b", "HDMI2"), (r"\bnetflix\b", "Netflix"),
          (r"\byoutube\b", "YouTube"), (r"(?-i:\bAV\b)|\ba/v\b", "AV")]
AC_MODE = re.compile(r"\b(?P<v>cool|cooling|heat|heating|auto|automatic)\s+mode\b|\bmode\s*(?:to|at|on|is|of|:|set\s+to)?\s*(?:the\s+)?(?P<v2>cool|heat|auto)\b")
AC_MODE_SCOPED = re.compile(r"\b(?:to|on|in)\s+(?P<v>cool|heat|auto)\b(?!\s+(?:colou?r|tone|white|light|lighting|hue|glow))")
LIGHT_MODE = re.compile(r"\b(?P<v>static|dynamic)\b")
COLOR = re.compile(r"\b(?P<v>warm|warmer|cool|cooler|neutral)(?:\s+white)?\s+(?:colou?r|tones?|light|lighting|white|hue|glow)\b"
                   r"|\bcolou?r\s*(?:to|of|is|at|:|set\s+to)?\s*(?:a\s+|something\s+|more\s+)?(?P<v2>warm|cool|neutral)\b")
COLOR_SCOPED = re.compile(r"\b(?:to|at|on|in|(?:make|keep|set|turn)\s+(?:it|them|'em))\s+(?:a\s+)?(?P<v>warm|warmer|cool|cooler|neutral)\b(?!\s+mode)")
EQUALIZER = [(r"\bbass[\s-]*boost(?:ed)?\b", "bass boost"), (r"\btreble[\s-]*boost(?:ed)?\b", "treble boost")]
BALANCED = re.compile(r"\bbalanced\b")
ARM = re.compile(r"\b(?P<dis>dis)?arm(?:ed|ing)?\b(?!\s+(?:mode|status|state|setting|option|preference|level)s?\b)")
_CHOICE_WORDS = sorted({v.lower() for params in DEVICES.values() for spec in params.values() if spec[0] == "cat"
                        for v in spec[1]} | {"armed", "disarmed", "arm", "disarm", "cooling", "heating", "warmer",
                                              "cooler", "on", "off"}, key=len, reverse=True)
_CHOICE = r"(?:" + "|".join(re.escape(w) for w in _CHOICE_WORDS) + r")"
_NUMBER_CHOICE = r"\d{1,3}\s*(?:%|percent|degrees?)?"
ALTERNATIVES = re.compile(  # "warm or cool?", "armed or disarmed?", "20, 30 or 40?": asked, not stated
    r"\b" + _CHOICE + r"(?:\s*,\s*" + _CHOICE + r")*\s*,?\s+or\s+" + _CHOICE + r"\b"
    r"|(?<![\w.])" + _NUMBER_CHOICE + r"(?:\s*,\s*" + _NUMBER_CHOICE + r")*\s*,?\s+or\s+" + _NUMBER_CHOICE)
ONOFF_SECURITY = re.compile(r"\b(?P<on>activate|enable|turn on|switch on)\b|\b(?P<off>deactivate|disable|turn off|switch off)\b")


def _canonical(param, raw):
    raw = raw.lower()
    if param == "mode":
        return {"cooling": "cool", "heating": "heat", "automatic": "auto"}.get(raw, raw)
    if param == "color":
        return {"warmer": "warm", "cooler": "cool"}.get(raw, raw)
    return raw


class _Sentence:
    """One sentence's device mentions and values, with positions, before resolution."""

    def __init__(self, text):
        lowered = text.lower()
        self.raw = text if len(lowered) == len(text) else lowered  # same positions as self.text
        self.text = lowered
        self.taken = []  # character spans already used by a value
        self.mentions = self._find_mentions()
        self.values = []  # (pos, param, value, candidate devices)
        self.param_words = []  # (pos, param): parameters talked about without a value

    def _find_mentions(self):
        excluded = [m.span() for m in re.finditer(NOT_DEVICE, self.text)]
        found = []
        for device, pattern in DEVICE_PATTERNS.items():
            for m in re.finditer(pattern, self.text):
                if not any(a <= m.start() < b for a, b in excluded):
                    found.append((m.start(), device))
        return sorted(found)

    def free(self, span):
        return not any(span[0] < b and a < span[1] for a, b in self.taken)

    def add(self, match, param, value, devices, group="n"):
        span = match.span()
        if not self.free(span):
            return
        self.taken.append(span)
        self.values.append((match.start(group) if match.group(group) is not None else span[0], param, value, devices))

    def devices(self):
        return {d for _, d in self.mentions}

    def scope_at(self, pos, fallback):
        """The device talked about at `pos`: the nearest mention before it, else after it, else fallback."""
        before = [d for p, d in self.mentions if p <= pos]
        if before:
            return before[-1]
        return self.mentions[0][1] if self.mentions else fallback


# dialogue states kept per extractor: each a tuple of references to texts held anyway, and a two-key dict
CONTEXT_STATES = 50_000


class ActionExtractor:
    """Rule-based, word-boundary action extraction for EdgeWisePersona-style dialogue.

    The dialogue state a context leaves (the device and parameter last talked about) is kept per context,
    each one built from its context less the last message: every arm's reply to a turn, and every later
    turn of the dialogue, reads the same history, which is then analysed once rather than once per call."""

    def __init__(self):
        self._states = {}

    def extract_actions(self, text, context=None):
        texts = tuple(message["text"] if isinstance(message, dict) else message for message in context or ())
        return self._analyse(text, self._state_after(texts))

    def _state_after(self, texts):
        """A new dict of the state after reading `texts` in order, from the longest of its prefixes already read."""
        known = len(texts)
        while known and texts[:known] not in self._states:
            known -= 1
        state = dict(self._states[texts[:known]]) if known else {"device": None, "param": None}
        for k in range(known, len(texts)):
            self._analyse(texts[k], state)
            if len(self._states) >= CONTEXT_STATES:
                self._states.clear()
            self._states[texts[:k + 1]] = dict(state)
        return state

    # ------------------------------------------------------------ one message
    def _analyse(self, text, state):
        actions = {}
        for raw in re.split(r"(?<=[.!?;])\s+|\n+", text or ""):
            if raw.strip():
                self._sentence(_Sentence(raw), actions, state)
        return actions

    def _sentence(self, s, actions, state):
        self._find_values(s, state)
        has_cue = bool(CUE.search(s.text)) or any(p not in ("input_source",) for _, p, _, _ in s.values)
        resolved = []
        for pos, param, value, candidates in s.values:
            device = self._resolve(pos, candidates, s, state)
            if device:
                resolved.append((pos, device, param, value))
        for pos, param in s.param_words:
            device = self._resolve(pos, PARAM_DEVICES[param], s, state)
            if device:
                resolved.append((pos, device, param, None))
        events = sorted([(p, d, None, None) for p, d in s.mentions] + resolved, key=lambda e: e[0])
        if has_cue:
            for _, device, param, value in events:
                entry = actions.setdefault(device, {})
                if param is not None and value is not None:
                    entry[param] = value
            if not events and state["device"] and PRONOUN_OBJECT.search(s.text):
                actions.setdefault(state["device"], {})
        if events:
            state["device"] = events[-1][1]
        params = sorted(s.param_words + [(pos, p) for pos, p, _, _ in s.values])
        if params:
            state["param"] = params[-1][1]

    def _resolve(self, pos, candidates, s, state):
        """The device a value at `pos` belongs to, or None when it cannot be told."""
        if len(candidates) == 1:
            return candidates[0]
        before = [d for p, d in s.mentions if p <= pos and d in candidates]
        if before:
            return before[-1]
        after = [d for p, d in s.mentions if p > pos and d in candidates]
        if after:
            return after[0]
        if state["device"] in candidates:
            return state["device"]
        return None

    # ------------------------------------------------------------ values
    def _find_values(self, s, state):
        t = s.text
        if t.rstrip().endswith("?"):
            s.taken.extend(m.span() for m in ALTERNATIVES.finditer(t))
        for m in re.finditer(r"\balarm\s+volume\b" + CONNECT + r"\s*" + NUMBER + r"(?![\w'])", t):
            s.add(m, "alarm_volume", int(m.group("n")), ["security"])
        for regex in (KEYWORD_NUMBER, NUMBER_KEYWORD):
            for m in regex.finditer(t):
                param = next(p for w, p in PARAM_WORDS if re.fullmatch(w, m.group("kw")))
                s.add(m, param, int(m.group("n")), PARAM_DEVICES[param])
        for m in DEGREES.finditer(t):
            s.add(m, "temperature", int(m.group("n")), ["ac"])
        for pattern, value in INPUTS:
            for m in re.finditer(pattern, s.raw, re.I):
                s.add(m, "input_source", value, ["tv"], group=0)
        for m in AC_MODE.finditer(t):
            s.add(m, "mode", _canonical("mode", m.group("v") or m.group("v2")), ["ac"], group=0)
        for m in COLOR.finditer(t):
            s.add(m, "color", _canonical("color", m.group("v") or m.group("v2")), ["lights"], group=0)
        for m in LIGHT_MODE.finditer(t):
            s.add(m, "mode", m.group("v"), ["lights"], group=0)
        for pattern, value in EQUALIZER:
            for m in re.finditer(pattern, t):
                s.add(m, "equalizer", value, ["speaker"], group=0)
        for m in AC_MODE_SCOPED.finditer(t):
            if s.scope_at(m.start(), state["device"]) == "ac":
                s.add(m, "mode", m.group("v"), ["ac"], group="v")
        for m in COLOR_SCOPED.finditer(t):
            if s.scope_at(m.start(), state["device"]) == "lights":
                s.add(m, "color", _canonical("color", m.group("v")), ["lights"], group="v")
        for m in BALANCED.finditer(t):
            if s.scope_at(m.start(), state["device"]) == "speaker" or re.search(r"\b(?:equali[sz]er|eq)\b", t):
                s.add(m, "equalizer", "balanced", ["speaker"], group=0)
        self._security(s)
        self._param_words(s)
        self._bare_numbers(s, state)

    def _security(self, s):
        for m in ARM.finditer(s.text):
            s.add(m, "armed", m.group("dis") is None, ["security"], group=0)
        if "security" in s.devices() and not any(p == "armed" for _, p, _, _ in s.values):
            m = ONOFF_SECURITY.search(s.text)
            if m:
                s.add(m, "armed", m.group("on") is not None, ["security"], group=0)

    def _bare_numbers(self, s, state):
        """'Make it 75' after the lights -> brightness 75: the device's only numeric parameter."""
        for m in BARE.finditer(s.text):
            if not s.free(m.span("n")):
                continue
            n = int(m.group("n"))
            device = s.scope_at(m.start("n"), state["device"])
            named = [p for pos, p in s.param_words if pos < m.start("n") and device in PARAM_DEVICES[p]]
            if named:
                s.add(m, named[-1], n, [device], group="n")
                continue
            param = {"lights": "brightness", "speaker": "volume", "security": "alarm_volume"}.get(device)
            if device == "ac":
                param = "temperature" if 16 <= n <= 35 else ("fan_speed" if state["param"] == "fan_speed" and n <= 3 else None)
            elif device == "tv" and state["param"] in ("volume", "brightness"):
                param = state["param"]
            if param:
                s.add(m, param, n, [device], group="n")

    def _param_words(self, s):
        """Parameters named without a value ('What temperature would you like?') still name a device."""
        for pattern, param in PARAM_WORDS:
            for m in re.finditer(r"(?<!outdoor )(?<!outside )\b(?:" + pattern + r")\b", s.text):
                if s.free(m.span()) and not any(pos == m.start() for pos, _ in s.param_words):
                    s.taken.append(m.span())
                    s.param_words.append((m.start(), param))


def _ratio(num, den):
    return num / den if den else None


def _f1(tp, fp, fn):
    """2tp / (2tp + fp + fn): the harmonic mean of P and R, and 0 (not undefined) when one side is empty."""
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _is_number(v):
    return isinstance(v, int) and not isinstance(v, bool)


COUNT_KEYS = ("device_tp", "device_fp", "device_fn", "param_tp", "param_fp", "param_fn",
              "param_given_tp", "param_given_fp", "param_given_fn", "param_private_tp", "param_private_fp",
              "param_private_fn", "num_n", "num_ref", "num_exact", "num_within1", "num_abs_err",
              "cat_n", "cat_ref", "cat_correct")


def action_triples(actions):
    """{(device, param, value)} of {device: {param: value}}."""
    return {(d, p, v) for d, ps in actions.items() for p, v in ps.items()}


class ActionMetrics:
    """Turn-level counts and their micro/macro aggregation (definitions in the module docstring)."""

    @staticmethod
    def compare_actions(pred, ref, given=frozenset()):
        """Counts for one turn; `given`: the (device, param, value) triples the user stated earlier."""
        dp, dr = set(pred), set(ref)
        pred_items, ref_items = action_triples(pred), action_triples(ref)
        counts = dict.fromkeys(COUNT_KEYS, 0)
        counts.update(device_tp=len(dp & dr), device_fp=len(dp - dr), device_fn=len(dr - dp))
        for kind, keep in (("param", lambda t: True), ("param_given", lambda t: t in given),
                           ("param_private", lambda t: t not in given)):
            p = {t for t in pred_items if keep(t)}
            r = {t for t in ref_items if keep(t)}
            counts.update({f"{kind}_tp": len(p & r), f"{kind}_fp": len(p - r), f"{kind}_fn": len(r - p)})
        for device, param, value in ref_items:
            counts["num_ref" if _is_number(value) else "cat_ref"] += 1
        for device in dp & dr:
            for param in set(pred[device]) & set(ref[device]):
                a, b = pred[device][param], ref[device][param]
                if _is_number(a) and _is_number(b):
                    counts["num_n"] += 1
                    counts["num_exact"] += a == b
                    counts["num_within1"] += abs(a - b) <= 1
                    counts["num_abs_err"] += abs(a - b)
                else:
                    counts["cat_n"] += 1
                    counts["cat_correct"] += a == b
        return counts

    @staticmethod
    def sum_counts(counts_list):
        total = dict.fromkeys(COUNT_KEYS, 0)
        for counts in counts_list:
            for key in COUNT_KEYS:
                total[key] += counts[key]
        return total

    @classmethod
    def aggregate(cls, counts_list):
        """Micro figures over a run: sum the counts, then divide."""
        c = cls.sum_counts(counts_list)
        out = {}
        for kind in ("device", "param", "param_given", "param_private"):
            p = _ratio(c[f"{kind}_tp"], c[f"{kind}_tp"] + c[f"{kind}_fp"])
            r = _ratio(c[f"{kind}_tp"], c[f"{kind}_tp"] + c[f"{kind}_fn"])
            f1 = _f1(c[f"{kind}_tp"], c[f"{kind}_fp"], c[f"{kind}_fn"])
            out.update({f"{kind}_precision": p, f"{kind}_recall": r, f"{kind}_f1": f1})
        out["numerical_exact"] = _ratio(c["num_exact"], c["num_n"])
        out["numerical_within1"] = _ratio(c["num_within1"], c["num_n"])
        out["numerical_mae"] = _ratio(c["num_abs_err"], c["num_n"])
        out["numerical_coverage"] = _ratio(c["num_n"], c["num_ref"])
        out["categorical_accuracy"] = _ratio(c["cat_correct"], c["cat_n"])
        out["categorical_coverage"] = _ratio(c["cat_n"], c["cat_ref"])
        return out

    @classmethod
    def macro(cls, counts_by_group):
        """Mean over groups (personas) of each group's micro figures, skipping undefined ones."""
        per_group = [cls.aggregate(counts) for counts in counts_by_group.values()]
        keys = per_group[0].keys() if per_group else []
        return {k: _mean([g[k] for g in per_group if g[k] is not None]) for k in keys}


def _mean(values):
    return sum(values) / len(values) if values else None


def prescribed_settings(meta, routines, applied_routines):
    """{device: {param: value}} the session's applied routine(s) prescribe, or None if spontaneous."""
    if not applied_routines:
        return None
    applied = [routines[i] for i in applied_routines if 0 <= i < len(routines)]
    matching = [r for r in applied if triggers_match(r.get("triggers") or {}, meta or {})] or applied
    prescribed = {}
    for routine in matching:
        for device, params in active_actions(routine.get("actions")).items():
            prescribed.setdefault(device, {}).update(params)
    return prescribed
