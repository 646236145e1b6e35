"""A synthetic EdgeWisePersona-format dataset (characters/routines/sessions rows).

The demo and most tests run on this instead of the real dataset (which lives on the Hub). It keeps
the real format and statistics, and it plants the signal the study is about: in routine-driven
sessions a share of user requests is vague ("the usual for tonight, please") and the assistant
answers with *that persona's* routine settings for the context. A model without the user's history
cannot know those values; an adapter trained on the user's past sessions can learn them.
"""

import random

from scripts.schema import DEVICES, TRIGGERS, active_actions, triggers_match

PUBLISHED = {  # project page of EdgeWisePersona
    "personas": 200, "sessions_per_persona": 50.0, "messages_per_session": 9.88,
    "routines_per_persona": 3.98, "triggers_per_routine": 4.98, "devices_per_routine": 3.11,
    "actions_per_routine": 8.24, "routine_driven_share": 0.75,
}

# ---------------------------------------------------------------- personas
FIRST_NAMES = """Theo Lila Clara Henry Pamela Patrick Mara Jonas Priya Omar Ines Felix Hana Rosa Victor
Nadia Elliot Greta Samir Yuki Bruno Amara Leo Ingrid Tomas Zara Milo Esther Rafael June Dmitri Aisha
Oskar Wren Celeste Idris Maren Kofi Lucia Anton Freya Jasper Noor Bianca Emeka Sven Talia Hugo Ivy
Marco Selin Rupert Ada Casper Leila Boris Maeve Tariq Odile Pablo""".split()
OCCUPATIONS = """retired lighthouse keeper|graphic designer|night-shift nurse|high-school chemistry teacher|
freelance translator|stunt performer|jewelry restorer|beekeeper|software engineer|opera singer|
stand-up comedian|carpenter|veterinarian|museum archivist|food-truck owner|marine biologist|
yoga instructor|crime novelist|bookbinder|pastry chef|airline pilot|watchmaker|landscape architect|
puppeteer|sommelier|firefighter|astronomy student|tattoo artist|court stenographer|locksmith|
fisherman|magician|perfumer|calligrapher|bike messenger|violin maker|data analyst|florist|
sculptor|radio host""".replace("\n", "").split("|")
HOBBIES = """birdwatching|restoring vintage radios|salsa dancing|balcony gardening|woodworking|
knitting|collecting stamps|baking sourdough|stargazing|reading mystery novels|playing the ukulele|
making balloon animals|brewing kombucha|painting miniatures|rock climbing|calligraphy|
restoring motorcycles|writing poetry|chess|pottery|photography|crossword puzzles|fly fishing|
origami|trail running|collecting vinyl records|meditation|cooking curries|model trains|
watching old westerns""".replace("\n", "").split("|")
TRAITS = """meticulous|easygoing|energetic|soft-spoken|sentimental|impatient|cheerful|dry-humored|
thoughtful|dramatic|practical|shy|curious|stubborn|warm-hearted""".replace("\n", "").split("|")

STYLES = {
    "formal": {
        "describe": "speaks formally and politely",
        "greet": ["Good {tod}.", "Good {tod} to you.", "Hello.", "Greetings."],
        "ask": ["Would you kindly {verb} {dev}{to}?", "Could you please {verb} {dev}{to}?",
                "I would like you to {verb} {dev}{to}, if you would.", "Please {verb} {dev}{to}."],
        "thanks": ["Thank you, that will be all.", "Much obliged.", "That is all for now, thank you.",
                   "Thank you very much."],
    },
    "casual": {
        "describe": "talks casually and keeps things relaxed",
        "greet": ["Hey there!", "Hey.", "Yo!", "Hi!", "Hey, what's up?"],
        "ask": ["Can you {verb} {dev}{to}?", "Could you {verb} {dev}{to}?", "Mind if we {verb} {dev}{to}?",
                "Let's {verb} {dev}{to}.", "{Verb} {dev}{to}, would you?"],
        "thanks": ["Thanks!", "Cool, thanks.", "Awesome, that's it.", "Perfect, cheers."],
    },
    "enthusiastic": {
        "describe": "is bubbly and enthusiastic, full of exclamations",
        "greet": ["Oh, good {tod}!", "Hello hello!", "What a {tod}!", "Oh my gosh, hi!"],
        "ask": ["Could you please {verb} {dev}{to}?", "Ooh, can you {verb} {dev}{to}?",
                "Would you {verb} {dev}{to}? That would be amazing!", "Let's {verb} {dev}{to}!"],
        "thanks": ["Thank you so much!", "You're the best!", "Perfect, I love it!", "Yay, thank you!"],
    },
    "terse": {
        "describe": "is terse and to the point",
        "greet": ["", "Hi.", "Right."],
        "ask": ["{Verb} {dev}{to}.", "{Verb} {dev}{to}, please.", "{Dev}{to}.", "Need {dev}{to}."],
        "thanks": ["Thanks.", "Good.", "That's all.", "Fine."],
    },
    "hesitant": {
        "describe": "is a little hesitant and often trails off",
        "greet": ["Um, hi...", "Oh, hello... sorry to bother you.", "Hi... um.", "Good {tod}... I think."],
        "ask": ["Um, could you maybe {verb} {dev}{to}?", "Could you... {verb} {dev}{to}, please?",
                "Sorry, would it be possible to {verb} {dev}{to}?", "Maybe {verb} {dev}{to}? If that's okay."],
        "thanks": ["Oh, thank you... that's nice.", "Thanks, that's... good.", "That's all, I think. Thank you.",
                   "Great... thank you."],
    },
    "salty": {
        "describe": "talks like an old sailor, full of sea sayings",
        "greet": ["Ahoy!", "Mornin', matey.", "Ahoy there.", "Avast!"],
        "ask": ["{Verb} {dev}{to}, will ya?", "Be a good deckhand and {verb} {dev}{to}.",
                "Could ya {verb} {dev}{to}?", "{Verb} {dev}{to}, on the double."],
        "thanks": ["Aye, that'll do.", "Fair winds, thank ye.", "Shipshape, thanks.", "Aye, much obliged."],
    },
}


def make_character(rng, used):
    """A distinct free-text personality sketch and the persona's name and style."""
    while True:
        name = rng.choice(FIRST_NAMES)
        age, job = rng.randint(19, 78), rng.choice(OCCUPATIONS)
        hobby, hobby2 = rng.sample(HOBBIES, 2)
        trait, style = rng.choice(TRAITS), rng.choice(sorted(STYLES))
        text = (f"{name} is a {age}-year-old {job} who loves {hobby} and {hobby2}. "
                f"{name} is {trait} and {STYLES[style]['describe']}. "
                f"At home {name} likes the house to adapt to the weather and the time of day.")
        if text not in used:
            used.add(text)
            return {"name": name, "style": style, "hobby": hobby, "text": text}


# ---------------------------------------------------------------- routines
SUN_FOR_TIME = {"morning": ["before_sunrise", "daylight"], "afternoon": ["daylight"],
                "evening": ["daylight", "after_sunset"], "night": ["after_sunset"]}
TEMP_FOR_WEATHER = {"sunny": ["cold", "mild", "warm", "hot"], "cloudy": ["very cold", "cold", "mild", "warm"],
                    "rainy": ["cold", "mild", "warm"], "snowy": ["very cold", "cold"]}


def random_context(rng):
    """A coherent set of all five triggers (no snow when hot, no sun at night)."""
    tod = rng.choice(TRIGGERS["time_of_day"])
    weather = rng.choice(TRIGGERS["weather"])
    return {"time_of_day": tod, "day_of_week": rng.choice(TRIGGERS["day_of_week"]),
            "sun_phase": rng.choice(SUN_FOR_TIME[tod]), "weather": weather,
            "outdoor_temp": rng.choice(TEMP_FOR_WEATHER[weather])}


def routine_values(rng, device, ctx):
    """Settings a person would plausibly want for this device in this context."""
    step5 = lambda lo, hi: rng.randrange(lo, hi + 1, 5)  # noqa: E731
    cold = ctx.get("outdoor_temp") in ("very cold", "cold")
    hot = ctx.get("outdoor_temp") in ("warm", "hot")
    dark = ctx.get("time_of_day") == "night" or ctx.get("sun_phase") != "daylight"
    if device == "ac":
        mode = "heat" if cold else "cool" if hot else rng.choice(["auto", "heat", "cool"])
        temp = rng.randint(21, 26) if mode == "heat" else rng.randint(17, 22) if mode == "cool" else rng.randint(19, 24)
        return {"temperature": temp, "mode": mode, "fan_speed": rng.randint(0, 3)}
    if device == "lights":
        return {"brightness": step5(10, 50) if dark else step5(50, 100),
                "color": rng.choice(["warm", "warm", "cool", "neutral"] if dark else ["cool", "neutral", "warm"]),
                "mode": rng.choice(["static", "static", "dynamic"])}
    if device == "tv":
        return {"volume": step5(10, 60), "brightness": step5(30, 90),
                "input_source": rng.choice(DEVICES["tv"]["input_source"][1])}
    if device == "speaker":
        return {"volume": step5(10, 70), "equalizer": rng.choice(DEVICES["speaker"]["equalizer"][1])}
    return {"armed": rng.random() < (0.8 if dark else 0.4), "alarm_volume": rng.randrange(30, 101, 10)}


def distinguishable(triggers, others):
    """True when no session context could match both `triggers` and any of `others`."""
    return all(any(a.get(k) is not None and b.get(k) is not None and a[k] != b[k] for k in TRIGGERS)
               for a, b in ((triggers, o) for o in others))


def make_routines(rng):
    routines = []
    for _ in range(rng.choice([3, 4, 4, 4, 5])):
        while True:
            ctx = random_context(rng)
            triggers = {k: (None if rng.random() < 0.004 else v) for k, v in ctx.items()}
            if distinguishable(triggers, [r["triggers"] for r in routines]):
                break
        n_devices = rng.choices([2, 3, 4], weights=[0.2, 0.49, 0.31])[0]
        chosen = set(rng.sample(sorted(DEVICES), n_devices))
        actions = {d: (routine_values(rng, d, ctx) if d in chosen else None) for d in DEVICES}
        routines.append({"triggers": {k: v for k, v in triggers.items() if v is not None}, "actions": actions})
    return routines


# ---------------------------------------------------------------- wording
DEVICE_NAMES = {
    "tv": ["the TV", "the television", "the living room TV", "the telly"],
    "ac": ["the AC", "the air conditioning", "the thermostat", "the AC unit"],
    "lights": ["the lights", "the living room lights", "the lamps", "the lighting"],
    "speaker": ["the speaker", "the music", "the sound system", "the speakers"],
    "security": ["the security system", "the alarm", "home security"],
}
VERBS = {"tv": ["set", "switch", "put", "turn on"], "ac": ["set", "adjust", "put", "turn on"],
         "lights": ["set", "dim", "adjust", "turn on"], "speaker": ["set", "turn on", "adjust", "put"],
         "security": ["set", "arm", "adjust"]}
PARAM_PHRASES = {
    ("tv", "volume"): ["volume {v}", "volume at {v}", "the volume at {v}", "volume of {v}"],
    ("tv", "brightness"): ["brightness {v}", "brightness at {v}", "{v}% brightness", "brightness of {v}"],
    ("tv", "input_source"): ["{v}", "the {v} input", "input source {v}", "input {v}"],
    ("ac", "temperature"): ["{v} degrees", "{v}°C", "a temperature of {v}", "temperature {v}"],
    ("ac", "mode"): ["{v} mode", "mode {v}", "{v} mode"],
    ("ac", "fan_speed"): ["fan speed {v}", "fan at {v}", "fan speed of {v}", "the fan on {v}"],
    ("lights", "brightness"): ["{v}% brightness", "brightness {v}", "{v} percent brightness", "brightness at {v}%"],
    ("lights", "color"): ["{v} color", "a {v} color", "{v} tone", "{v} colour"],
    ("lights", "mode"): ["{v} mode", "{v} mode", "mode {v}"],
    ("speaker", "volume"): ["volume {v}", "volume at {v}", "{v}% volume", "a volume of {v}"],
    ("speaker", "equalizer"): ["{v} equalizer", "the equalizer on {v}", "{v} EQ", "equalizer set to {v}"],
    ("security", "alarm_volume"): ["alarm volume {v}", "the alarm volume at {v}", "alarm volume of {v}"],
}
PARAM_WORDS = {"volume": "volume", "brightness": "brightness", "input_source": "input",
               "temperature": "temperature", "mode": "mode", "fan_speed": "fan speed", "color": "color",
               "equalizer": "equalizer", "alarm_volume": "alarm volume", "armed": "arming"}
CONFIRM = ["Setting {dev} to {s}.", "Done. {Dev} set to {s}.", "I've set {dev} to {s}.", "Okay, {dev} is now at {s}.",
           "{Dev} adjusted: {s}.", "Got it. Setting {dev} to {s}.", "Sure thing. {Dev} now at {s}.",
           "Understood. {Dev} set to {s}.", "All set: {dev} at {s}.", "Adjusting {dev} to {s}."]
ASK_BACK = ["What {params} would you like for {dev}?", "Sure. What {params} should I use for {dev}?",
            "Of course. Which {params} do you prefer for {dev}?", "I can do that. What {params} would you like?",
            "Happy to. Please tell me the {params} for {dev}."]
ANSWER = ["{S}, please.", "Let's go with {s}.", "Make it {s}.", "How about {s}?", "I'd like {s}.", "{S}."]
VAGUE = {
    "lights": ["make it cozy in here", "do the lights the way I like them", "sort out the lighting for me",
               "the usual lighting, please", "get the lights right for this time of day"],
    "ac": ["make it comfortable in here", "get the temperature the way I like it", "the usual climate, please",
           "sort out the AC for me", "I'd like it comfy, you know how"],
    "tv": ["put the TV on like usual", "get the TV ready for me", "the usual TV setup, please",
           "set up the TV the way I like it"],
    "speaker": ["put on some music, the usual way", "get the speaker going like always",
                "my usual music setup, please", "some tunes the way I like them"],
    "security": ["lock things down like usual", "do the usual with the security system",
                 "the usual security setup, please", "make sure the house is safe the way I like it"],
}
GENERIC_VAGUE = ["the usual for {when}, please", "set things up like always for {when}",
                 "you know what I like for {when}", "my usual {when} setup, please"]
PREFERENCE = ["{Ack} {Dev} set to {s}, just how you like it {when}.", "{Ack} {Dev} at {s}, as usual {when}.",
              "{Ack} I've set {dev} to {s}, your usual {when}.", "{Ack} Your usual settings {when}: {dev} at {s}.",
              "{Ack} Setting {dev} to {s}, the way you like it."]
PARTIAL = ["Setting {dev} to {given}, and {rest} as usual.", "Done: {dev} at {given}; I've also set {rest} like you usually have it {when}.",
           "{Dev} set to {given}, plus {rest}, your usual {when}."]
ACKS = ["Of course.", "Sure.", "Certainly.", "Right away.", "Absolutely.", "Got it."]
CONTEXT = {
    "weather": {"sunny": ["The sun is out", "It's bright and sunny", "Lovely sunshine today"],
                "cloudy": ["It's grey and cloudy", "Clouds everywhere today", "The sky is overcast"],
                "rainy": ["It's pouring outside", "The rain won't stop", "It's drizzling out there"],
                "snowy": ["It's snowing", "Snow is falling outside", "Everything is white with snow"]},
    "outdoor_temp": {"very cold": "and it's freezing", "cold": "and it's chilly", "mild": "and it's mild",
                     "warm": "and it's warm out", "hot": "and it's boiling hot"},
}
ACTIVITY = ["I'm about to do some {hobby}.", "Time for some {hobby}.", "I want to spend the {tod} on {hobby}.",
            "Just got back home.", "Long day today.", "", ""]
SMALL_TALK = [("By the way, I'm watching the birds outside.", "Sounds lovely. Let me know if you need anything."),
              ("My neighbour's dog is barking again.", "That sounds annoying. I'm here if you need anything."),
              ("I'm thinking about dinner already.", "Enjoy your dinner planning!"),
              ("What a day it has been.", "I hope the rest of it is relaxing.")]
CLOSING = ["You're welcome{name}! Enjoy your {tod}.", "My pleasure{name}.", "Anytime{name}. Have a nice {tod}.",
           "Glad to help{name}.", "You're welcome{name}. Everything is set."]


def fmt_value(device, param, value):
    if device == "tv" and param == "input_source" and value.startswith("HDMI"):
        return value
    return str(value)


def settings_phrase(rng, device, params):
    """'40% brightness, a warm color and dynamic mode' for {param: value}."""
    parts = []
    for param, value in params.items():
        if param == "armed":
            continue
        parts.append(rng.choice(PARAM_PHRASES[(device, param)]).format(v=fmt_value(device, param, value)))
    if params.get("armed") is not None:
        parts.insert(0, "armed" if params["armed"] else "disarmed")
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def cap(text):
    return text[:1].upper() + text[1:]


def when_phrase(meta):
    return f"on {meta['weather']} {meta['time_of_day']}s"


class Writer:
    """Builds one dialogue's messages in one persona's voice."""

    def __init__(self, rng, persona, meta):
        self.rng, self.persona, self.meta = rng, persona, meta
        self.style = STYLES[persona["style"]]
        self.messages = []

    def say(self, role, text):
        self.messages.append({"role": role, "text": " ".join(text.split())})

    def say_after(self, prefix, text):
        """The user's text after a connective ("Also,") starts lower-case; after a sentence, upper."""
        if prefix and not prefix.endswith((".", "!", "?")) and not text.startswith(("I ", "I'")):
            text = text[:1].lower() + text[1:]
        self.say("user", f"{prefix} {text}")

    def name(self):
        return f", {self.persona['name']}" if self.rng.random() < 0.25 else ""

    def opening(self):
        rng, meta = self.rng, self.meta
        greet = rng.choice(self.style["greet"]).format(tod=meta["time_of_day"])
        weather = rng.choice(CONTEXT["weather"][meta["weather"]])
        ctx = f"{weather} {CONTEXT['outdoor_temp'][meta['outdoor_temp']]}."
        act = rng.choice(ACTIVITY).format(hobby=self.persona["hobby"], tod=meta["time_of_day"])
        return " ".join(p for p in (greet, ctx, act) if p)

    def request(self, device, to_text, verb=None):
        verb = verb or self.rng.choice(VERBS[device])
        dev = self.rng.choice(DEVICE_NAMES[device])
        return self.rng.choice(self.style["ask"]).format(
            verb=verb, Verb=cap(verb), dev=dev, Dev=cap(dev), to=to_text)

    def explicit(self, device, params, prefix=""):
        s = settings_phrase(self.rng, device, params)
        self.say_after(prefix, self.request(device, " to " + s if s else ""))
        self.confirm(device, s)

    def ask_back(self, device, params, prefix=""):
        self.say_after(prefix, self.request(device, ""))
        dev = self.rng.choice(DEVICE_NAMES[device])
        names = [PARAM_WORDS[p] for p in params]
        listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        self.say("assistant", self.rng.choice(ASK_BACK).format(params=listed, dev=dev))
        s = settings_phrase(self.rng, device, params)
        self.say("user", self.rng.choice(ANSWER).format(s=s, S=cap(s)))
        self.confirm(device, s)

    def vague(self, device, params, prefix=""):
        when = f"this {self.meta['time_of_day']}"
        options = VAGUE[device] + [g.format(when=when) for g in GENERIC_VAGUE]
        ask = self.rng.choice(options)
        self.say_after(prefix, cap(ask) + self.rng.choice([".", ", please.", "!", "?"]))
        dev = self.rng.choice(DEVICE_NAMES[device])
        s = settings_phrase(self.rng, device, params)
        text = self.rng.choice(PREFERENCE).format(
            Ack=self.rng.choice(ACKS), dev=dev, Dev=cap(dev), s=s, when=when_phrase(self.meta))
        self.say("assistant", text)

    def partial(self, device, params, prefix=""):
        keys = list(params)
        given_key = self.rng.choice([k for k in keys if k != "armed"] or keys)
        given = {given_key: params[given_key]}
        rest = {k: v for k, v in params.items() if k != given_key}
        self.say_after(prefix, self.request(device, " to " + settings_phrase(self.rng, device, given)))
        dev = self.rng.choice(DEVICE_NAMES[device])
        text = self.rng.choice(PARTIAL).format(
            dev=dev, Dev=cap(dev), given=settings_phrase(self.rng, device, given),
            rest=settings_phrase(self.rng, device, rest), when=when_phrase(self.meta))
        self.say("assistant", text)

    def confirm(self, device, s):
        dev = self.rng.choice(DEVICE_NAMES[device])
        text = self.rng.choice(CONFIRM).format(dev=dev, Dev=cap(dev), s=s)
        if self.rng.random() < 0.3:
            text += self.rng.choice([" Anything else?", " Anything else you'd like?", f" Enjoy{self.name()}!"])
        self.say("assistant", text)

    def closing(self):
        self.say("user", self.rng.choice(self.style["thanks"]) or "Thanks.")
        self.say("assistant", self.rng.choice(CLOSING).format(name=self.name(), tod=self.meta["time_of_day"]))


def random_settings(rng, avoid):
    """1-3 devices with random settings that differ from `avoid` (a routine's actions)."""
    out = {}
    for device in rng.sample(sorted(DEVICES), rng.choice([1, 2, 2, 3])):
        values = routine_values(rng, device, random_context(rng))
        keep = rng.sample(sorted(values), rng.randint(1, len(values)))
        params = {k: values[k] for k in keep}
        if params == {k: avoid.get(device, {}).get(k) for k in keep}:
            continue
        out[device] = params
    return out or {"lights": {"brightness": 55}}


def make_session(rng, persona, routines, session_id):
    routine_driven = rng.random() < 0.75
    if routine_driven:
        index = rng.randrange(len(routines))
        routine = routines[index]
        meta = {**random_context(rng), **routine["triggers"]}
        actions = active_actions(routine["actions"])
        styles = ["vague", "partial", "explicit", "ask_back"]
        weights = [0.35, 0.15, 0.3, 0.2]
    else:
        for _ in range(200):
            meta = random_context(rng)
            if not any(triggers_match(r["triggers"], meta) for r in routines):
                break
        actions = random_settings(rng, {})
        styles, weights = ["explicit", "ask_back"], [0.6, 0.4]
    writer = Writer(rng, persona, meta)
    devices = list(actions)
    rng.shuffle(devices)
    for i, device in enumerate(devices):
        prefix = writer.opening() if i == 0 else rng.choice(["", "Also,", "And", "Oh, and", "Next,", "One more thing:"])
        how = rng.choices(styles, weights)[0]
        getattr(writer, how)(device, actions[device], prefix)
        if rng.random() < 0.2:
            user, assistant = rng.choice(SMALL_TALK)
            writer.say("user", user)
            writer.say("assistant", assistant)
    writer.closing()
    summary = None
    if routine_driven:
        summary = (f"The user set {', '.join(devices)} in their usual way "
                   f"for a {meta['weather']} {meta['time_of_day']}.")
    return {"session_id": session_id, "meta": meta, "messages": writer.messages,
            "applied_routines": [index] if routine_driven else None, "session_summarization": summary}


def generate(n_personas, n_sessions, seed):
    """(characters, routines, sessions) rows, one per persona, deterministic for a seed."""
    rng = random.Random(seed)
    characters, routines_rows, sessions_rows, used = [], [], [], set()
    for _ in range(n_personas):
        persona = make_character(rng, used)
        routines = make_routines(rng)
        sessions = [make_session(rng, persona, routines, s) for s in range(n_sessions)]
        characters.append({"character": persona["text"]})
        routines_rows.append({"routines": routines})
        sessions_rows.append({"sessions": sessions})
    return characters, routines_rows, sessions_rows


def statistics(routines_rows, sessions_rows):
    routines = [r for row in routines_rows for r in row["routines"]]
    sessions = [s for row in sessions_rows for s in row["sessions"]]
    actions = [active_actions(r["actions"]) for r in routines]
    return {
        "personas": len(routines_rows),
        "sessions_per_persona": len(sessions) / len(sessions_rows),
        "messages_per_session": sum(len(s["messages"]) for s in sessions) / len(sessions),
        "routines_per_persona": len(routines) / len(routines_rows),
        "triggers_per_routine": sum(len([v for v in r["triggers"].values() if v is not None]) for r in routines) / len(routines),
        "devices_per_routine": sum(len(a) for a in actions) / len(routines),
        "actions_per_routine": sum(len(p) for a in actions for p in a.values()) / len(routines),
        "routine_driven_share": sum(bool(s["applied_routines"]) for s in sessions) / len(sessions),
    }


def print_statistics(stats):
    print(f"{'statistic':<24}{'demo':>10}{'published':>12}")
    for key, published in PUBLISHED.items():
        print(f"{key:<24}{stats[key]:>10.2f}{published:>12.2f}")
