"""A synthetic EdgeWisePersona-format dataset (characters/routines/sessions rows).

The demo and most tests run on this instead of the real dataset (which lives on the Hub). It keeps
the real format and published statistics, and by default it talks like the real sample (FACTS.md
section 4; `make_demo_data.py --report` measures both): the user opens with the weather and often an
activity, asks for a device with all, some or none of the values, and the assistant asks for what
is open (and asks whether anything else is needed) far more often than it volunteers a value. In
routine-driven sessions the values the user gives are that persona's routine settings, so a
persona's preferences live mostly in its own turns, as in the real data.

Dials (`WordingOptions`): `identity_cues` (none / real / strong: how much the wording tells users
apart), `proactive_share` (how often the assistant volunteers the routine's open values instead of
asking: the per-user signal a reply can carry) and `shared_preferences` (one routine list for every
user: nothing private to learn).
"""

import copy
import dataclasses
import random

from adaptcommand.data.schema import DEVICES, TRIGGERS, active_actions, triggers_match

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

def make_character(rng, used, own_voice_share):
    """A distinct free-text personality sketch and the persona's name, voice and hobbies."""
    while True:
        name = rng.choice(FIRST_NAMES)
        age, job = rng.randint(19, 78), rng.choice(OCCUPATIONS)
        hobby, hobby2 = rng.sample(HOBBIES, 2)
        trait = rng.choice(TRAITS)
        style = rng.choice(OWN_VOICES) if rng.random() < own_voice_share else "plain"
        text = (f"{name} is a {age}-year-old {job} who loves {hobby} and {hobby2}. "
                f"{name} is {trait} and {STYLES[style]['describe']}. "
                f"At home {name} likes the house to adapt to the weather and the time of day.")
        if text not in used:
            used.add(text)
            return {"name": name, "style": style, "hobbies": [hobby, hobby2], "text": text}


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
IDENTITY_CUES = ("none", "real", "strong")
# In routine-driven sessions, the share of the assistant's replies to a request that leaves settings
# open which state the routine's values instead of asking for them. 0.22 puts "assistant messages stating a value the user never
# gave" at the real sample's rate (about 0.07; `make_demo_data.py --report`).
REAL_PROACTIVE_SHARE = 0.22
# How each identity-cue level speaks: the share of personas with a voice of their own, how often that
# voice is used, how often an opening names the persona's own activity, whether the assistant uses names.
CUE_LEVELS = {
    "none": {"own_voice_personas": 0.0, "voice_use": 0.0, "own_activity": 0.0, "names": 0.0},
    "real": {"own_voice_personas": 0.35, "voice_use": 0.6, "own_activity": 0.45, "names": 0.0},
    "strong": {"own_voice_personas": 1.0, "voice_use": 1.0, "own_activity": 0.9, "names": 0.3},
}

DEVICE_NAMES = {
    "tv": ["the TV", "the television", "the living room TV", "the TV in the den"],
    "ac": ["the AC", "the air conditioning", "the thermostat", "the AC unit", "the heating"],
    "lights": ["the lights", "the living room lights", "the lamps", "the lighting", "the kitchen lights",
               "the bedroom lights"],
    "speaker": ["the speaker", "the music", "the sound system", "the speakers", "the living room speaker"],
    "security": ["the security system", "the alarm", "home security", "the alarm system"],
}
VERBS = {"tv": ["set", "switch", "put", "turn on", "adjust", "change"], "ac": ["set", "adjust", "put", "turn on", "change"],
         "lights": ["set", "dim", "adjust", "turn on", "change", "switch"],
         "speaker": ["set", "turn on", "adjust", "put", "change"], "security": ["set", "adjust", "configure"]}
# A request that names the device and no value: the assistant has to ask (or volunteer the values).
VAGUE = {
    "tv": ["turn on the TV", "switch on the television", "get the TV going", "put something on the TV",
           "adjust the TV settings", "set up the TV for me"],
    "ac": ["turn on the AC", "adjust the AC", "do something about the thermostat", "turn on the air conditioning",
           "change the AC settings", "fix the AC for me"],
    "lights": ["turn on the lights", "adjust the lights", "dim the lights a bit", "do something about the lighting",
               "change the lights", "brighten up the lights"],
    "speaker": ["play some music", "turn on the speaker", "put some music on the speaker", "get the speakers going",
                "start some music", "adjust the speaker"],
    "security": ["set up the security system", "check the security system", "sort out the alarm",
                 "configure home security", "take care of the alarm system"],
}
PARAM_PHRASES = {
    ("tv", "volume"): ["volume {v}", "volume at {v}", "the volume at {v}", "volume of {v}"],
    ("tv", "brightness"): ["brightness {v}", "brightness at {v}", "{v}% brightness", "brightness of {v}"],
    ("tv", "input_source"): ["{v}", "the {v} input", "input source {v}", "input {v}"],
    ("ac", "temperature"): ["{v} degrees", "{v}°C", "a temperature of {v}", "temperature {v}", "{v} degrees Celsius"],
    ("ac", "mode"): ["{v} mode", "mode {v}", "{v} mode"],
    ("ac", "fan_speed"): ["fan speed {v}", "fan at {v}", "fan speed of {v}", "the fan on {v}"],
    ("lights", "brightness"): ["{v}% brightness", "brightness {v}", "{v} percent brightness", "brightness at {v}%",
                               "{v} brightness"],
    ("lights", "color"): ["{v} color", "a {v} color", "{v} tone", "{v} colour", "a {v} tone"],
    ("lights", "mode"): ["{v} mode", "{v} mode", "mode {v}"],
    ("speaker", "volume"): ["volume {v}", "volume at {v}", "{v}% volume", "a volume of {v}"],
    ("speaker", "equalizer"): ["{v} equalizer", "the equalizer on {v}", "{v} EQ", "equalizer set to {v}", "{v}"],
    ("security", "alarm_volume"): ["alarm volume {v}", "the alarm volume at {v}", "alarm volume of {v}"],
}
PARAM_WORDS = {"volume": "volume", "brightness": "brightness", "input_source": "input source",
               "temperature": "temperature", "mode": "mode", "fan_speed": "fan speed", "color": "color",
               "equalizer": "equalizer setting", "alarm_volume": "alarm volume", "armed": "arming"}
JOINERS = [", ", " with ", " and ", ", "]

# Voices: "plain" is how most real users talk; the others are a voice of their own.
STYLES = {
    "plain": {
        "describe": "talks plainly",
        "greet": ["Good {tod}!", "Hi there.", "Hello!", "Hey.", "Good {tod}.", "Hi!", "Hey there!"],
        "ask": ["Could you {verb} {dev}{to}?", "Can you {verb} {dev}{to}?", "Please {verb} {dev}{to}.",
                "Could you please {verb} {dev}{to}?", "Can we {verb} {dev}{to}?", "I'd like you to {verb} {dev}{to}.",
                "Would you {verb} {dev}{to}?", "Let's {verb} {dev}{to}.", "{Verb} {dev}{to}, please.",
                "Can you also {verb} {dev}{to}?", "Would you mind if we {verb} {dev}{to}?"],
        "ack": ["Thanks.", "Perfect.", "Great.", "That sounds perfect.", "Sounds good.", "Thank you!", "Nice.",
                "That's great.", "Good.", "Awesome, thanks."],
        "answer": ["{S}, please.", "Let's go with {s}.", "Make it {s}.", "How about {s}?", "I'd like {s}.",
                   "Please set {s}.", "Let's set {s}.", "Set {s}.", "Yes, {s} please.", "Go with {s}."],
        "thanks": ["Thanks, that's all for now.", "That's everything, thank you.", "Perfect, thanks!",
                   "Thank you, that's all.", "Great, thanks for your help."],
    },
    "formal": {
        "describe": "speaks formally and politely",
        "greet": ["Good {tod}.", "Good {tod} to you.", "Greetings."],
        "ask": ["Would you kindly {verb} {dev}{to}?", "I would like you to {verb} {dev}{to}, if you would.",
                "Might I ask you to {verb} {dev}{to}?"],
        "ack": ["Thank you kindly.", "Much obliged.", "Very good."],
        "answer": ["I would prefer {s}, if you please.", "Kindly make it {s}."],
        "thanks": ["Thank you, that will be all.", "That is all for now, thank you kindly."],
    },
    "casual": {
        "describe": "talks casually and keeps things relaxed",
        "greet": ["Yo!", "Hey, what's up?", "Heya."],
        "ask": ["Mind cranking {dev}{to}?", "{Verb} {dev}{to}, would ya?", "Gonna need you to {verb} {dev}{to}, buddy."],
        "ack": ["Cool cool.", "Sweet.", "Nice one."],
        "answer": ["Eh, {s} works.", "Just do {s}, dude."],
        "thanks": ["Cool, that's it, buddy.", "Sweet, cheers!"],
    },
    "enthusiastic": {
        "describe": "is bubbly and enthusiastic, full of exclamations",
        "greet": ["Oh, good {tod}!", "Hello hello!", "Oh my gosh, hi!"],
        "ask": ["Ooh, can you {verb} {dev}{to}?", "Would you {verb} {dev}{to}? That would be amazing!"],
        "ack": ["Yay, wonderful!", "Oh, I love it!", "Amazing!"],
        "answer": ["Ooh, {s}, please!", "Let's do {s}! Yay!"],
        "thanks": ["You're the best! That's all!", "Yay, thank you so much!"],
    },
    "terse": {
        "describe": "is terse and to the point",
        "greet": ["Right.", "Morning."],
        "ask": ["{Verb} {dev}{to}. Now.", "Need {dev}{to}.", "{Dev}{to}. Quick."],
        "ack": ["Fine.", "Good. Next."],
        "answer": ["{S}. Done.", "{S}. That's it."],
        "thanks": ["That's all.", "Done. Bye."],
    },
    "hesitant": {
        "describe": "is a little hesitant and often trails off",
        "greet": ["Um, hi...", "Oh, hello... sorry to bother you.", "Hi... um."],
        "ask": ["Um, could you maybe {verb} {dev}{to}?", "Sorry, would it be possible to {verb} {dev}{to}?",
                "Maybe {verb} {dev}{to}? If that's okay..."],
        "ack": ["Oh... thank you.", "Um, okay, good."],
        "answer": ["Um... maybe {s}?", "I guess... {s}?"],
        "thanks": ["That's all, I think... thank you.", "Oh, thanks... that's nice."],
    },
    "salty": {
        "describe": "talks like an old sailor, full of sea sayings",
        "greet": ["Ahoy!", "Mornin', matey.", "Avast!"],
        "ask": ["Be a good deckhand and {verb} {dev}{to}.", "{Verb} {dev}{to}, will ya?",
                "{Verb} {dev}{to}, on the double."],
        "ack": ["Aye, shipshape.", "Aye, that'll do."],
        "answer": ["Make it {s}, matey.", "Aye, {s} it is."],
        "thanks": ["Fair winds, thank ye.", "Aye, much obliged, that's all."],
    },
}
OWN_VOICES = sorted(set(STYLES) - {"plain"})

WEATHER = {"sunny": ["the sun is out", "it's bright and sunny", "the sun is shining", "it's a clear, sunny day"],
           "cloudy": ["it's grey and cloudy", "the sky is overcast", "it's cloudy out", "the clouds are rolling in"],
           "rainy": ["it's pouring outside", "the rain won't stop", "it's drizzling out there", "the rain is quite heavy"],
           "snowy": ["it's snowing", "snow is falling outside", "it's snowing like crazy", "everything is white with snow"]}
TEMPERATURE = {"very cold": ["it's freezing", "it's bitterly cold", "it's absolutely freezing out"],
               "cold": ["it's chilly", "it's rather cold", "it's quite chilly"],
               "mild": ["it's mild", "the temperature is pleasant", "it's neither warm nor cold"],
               "warm": ["it's warm out", "it's getting warm", "it's quite warm"],
               "hot": ["it's boiling hot", "it's scorching outside", "the heat is unbearable"]}
CONTEXT = ["{W} and {t}.", "{W} this {tod}, and {t}.", "{T} and {w}.", "{W}, and {t}.", "Looks like {w} today.",
           "{W} this {tod}."]
ACTIVITY = ["I'm about to start {hobby}.", "I just finished some {hobby}.", "It's a perfect {tod} for {hobby}.",
            "I'm settling in for {hobby}.", "I want to spend the {tod} on {hobby}.", "I'm planning some {hobby} later.",
            "I need to focus on {hobby}.", "Time for {hobby}."]
ASK_BACK = ["What {params} would you like?", "Sure. What {params} would you like for {dev}?",
            "Of course. What {params} should I set {dev} to?", "I can help with that. What {params} would you like?",
            "Certainly. What {params} do you prefer?", "Sure, I can adjust {dev}. What {params} would you like?",
            "Absolutely. Which {params} would you like me to use?", "Happy to. What {params} should I use?",
            "Got it. Could you tell me the {params} you'd like?", "I can do that. Any particular {params}?"]
AS_WELL = ["Would you like me to adjust the {params} as well?", "Should I also set the {params}?",
           "Do you want a particular {params} too?", "Would you like to set the {params} as well?"]
YES = ["Yes, please set the {params} to {s}.", "Yes, {s}.", "Sure, make it {s}.", "Yes, let's do {s}."]
CONFIRM = ["Setting {dev} to {s}.", "I've set {dev} to {s}.", "I've adjusted {dev} to {s}.", "Understood. {Dev} set to {s}.",
           "Got it. Setting {dev} to {s}.", "Done: {dev} at {s}.", "Adjusting {dev} to {s}.",
           "Okay, I've put {dev} at {s}.", "Certainly. {Dev} now at {s}.", "All set: {dev} at {s}."]
PROACTIVE = ["Understood. I'll set {dev} to {s}.", "Sure. Setting {dev} to {s}.", "Of course. I've put {dev} at {s}.",
             "Certainly. I've set {dev} to {s}.", "Got it. I'll put {dev} at {s}."]
FOLLOW_UP = [" Anything else?", " Is there anything else you'd like me to adjust?", " Anything else you'd like?",
             " Would you like me to adjust anything else?", " Can I help with anything else?",
             " Is there anything else I can do for you?", " Anything else you need?"]
REMARKS = [" Let me know if you need any other adjustments.", " Enjoy!", " Enjoy your {tod}!"]
HOBBY_REMARK = " Enjoy your {hobby}!"  # only when the session named an activity
REASONS = {  # why a user wants a device: shared by every user, so they carry no identity
    "tv": ["I need some background noise.", "There's a show I want to catch.", "The picture looked a bit off earlier.",
           "I want to unwind in front of the screen."],
    "ac": ["It's a bit stuffy in here.", "I can feel a draft.", "My hands are getting cold.",
           "I'd like the room comfortable before I settle in."],
    "lights": ["The light feels a bit harsh.", "It's getting dark in here.", "I want a calmer atmosphere.",
               "I can barely see what I'm doing."],
    "speaker": ["Some music would help me focus.", "I'd like something soft in the background.",
                "It's too quiet in here.", "I feel like listening to something upbeat."],
    "security": ["I'm heading to bed soon.", "I'll be out for a while.", "I want some peace of mind.",
                 "Better safe than sorry."],
}
CONNECT = ["", "", "Also,", "And", "Oh, and", "Next,", "One more thing:", "Actually,"]
SMALL_TALK = [("By the way, what a day it has been.", "I hope the rest of it is relaxing."),
              ("I'm thinking about dinner already.", "Enjoy your dinner planning!"),
              ("The neighbours are being loud again.", "That sounds annoying. I'm here if you need anything.")]
CLOSING = ["You're welcome{name}! Enjoy your {tod}.", "My pleasure{name}.", "Anytime{name}. Have a nice {tod}.",
           "Glad to help{name}.", "You're welcome{name}. Everything is set."]


def settings_phrase(rng, device, params):
    """'40% brightness, a warm color and dynamic mode' for {param: value}."""
    parts = [rng.choice(PARAM_PHRASES[(device, param)]).format(v=value) for param, value in params.items() if param != "armed"]
    if params.get("armed") is not None:
        parts.insert(0, "armed" if params["armed"] else "disarmed")
    if len(parts) <= 1:
        return "".join(parts)
    return rng.choice(JOINERS).join(parts[:-1]) + " and " + parts[-1]


def listing(words):
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def cap(text):
    return text[:1].upper() + text[1:]


@dataclasses.dataclass(frozen=True)
class WordingOptions:
    """The dials of the generator (make_demo_data.py --help)."""
    identity_cues: str = "real"
    proactive_share: float = REAL_PROACTIVE_SHARE
    shared_preferences: bool = False


class Writer:
    """Builds one dialogue's messages in one persona's voice, at one identity-cue level."""

    def __init__(self, rng, persona, meta, options, volunteer_share):
        self.rng, self.persona, self.meta, self.options = rng, persona, meta, options
        self.volunteer_share = volunteer_share
        self.cues = CUE_LEVELS[options.identity_cues]
        self.hobby = None  # the activity this session mentions, if any
        self.messages = []

    def say(self, role, text):
        self.messages.append({"role": role, "text": " ".join(text.split())})

    def voice(self, key):
        """A template from the persona's own voice, or from what every user says."""
        rng = self.rng
        if self.options.identity_cues == "none":
            style = rng.choice(OWN_VOICES) if rng.random() < 0.2 else "plain"
        elif self.persona["style"] != "plain" and rng.random() < self.cues["voice_use"]:
            style = self.persona["style"]
        else:
            style = "plain"
        return rng.choice(STYLES[style][key])

    def pick_activity(self):
        if self.options.identity_cues == "none":
            return self.rng.choice(HOBBIES) if self.rng.random() < CUE_LEVELS["real"]["own_activity"] else None
        return self.rng.choice(self.persona["hobbies"]) if self.rng.random() < self.cues["own_activity"] else None

    def opening(self, request):
        rng, meta = self.rng, self.meta
        tod = meta["time_of_day"]
        parts = []
        if rng.random() < 0.35:
            parts.append(self.voice("greet").format(tod=tod))
        if rng.random() < 0.7:
            w, t = rng.choice(WEATHER[meta["weather"]]), rng.choice(TEMPERATURE[meta["outdoor_temp"]])
            parts.append(rng.choice(CONTEXT).format(W=cap(w), w=w, T=cap(t), t=t, tod=tod))
        self.hobby = self.pick_activity()
        activity = rng.choice(ACTIVITY).format(hobby=self.hobby, tod=tod) if self.hobby else ""
        if activity and rng.random() < 0.5:
            parts += [request, activity]
        else:
            parts += [activity, request]
        return " ".join(p for p in parts if p)

    def request(self, device, given):
        """A request for `device` stating the `given` settings (none: a vague request)."""
        rng = self.rng
        if not given:
            ask = rng.choice(VAGUE[device])
            return rng.choice(["Could you {a}?", "Can you {a}?", "Please {a}.", "Can you {a} for me?",
                               "Would you {a}?", "I'd like you to {a}."]).format(a=ask)
        verb = rng.choice(VERBS[device])
        dev = rng.choice(DEVICE_NAMES[device])
        return self.voice("ask").format(verb=verb, Verb=cap(verb), dev=dev, Dev=cap(dev),
                                        to=" to " + settings_phrase(rng, device, given))

    def user_turn(self, first, text):
        """The first request opens the dialogue; later ones may thank the assistant first."""
        rng = self.rng
        if first:
            self.say("user", self.opening(text))
            return
        ack = self.voice("ack") if rng.random() < 0.4 else ""
        connect = rng.choice(CONNECT)
        if connect and not connect.endswith(":"):
            text = text[:1].lower() + text[1:] if not text.startswith(("I ", "I'")) else text
        self.say("user", " ".join(p for p in (ack, connect, text) if p))

    def dev(self, device):
        return self.rng.choice(DEVICE_NAMES[device])

    def confirm(self, device, params, templates=CONFIRM):
        rng, dev = self.rng, self.dev(device)
        text = rng.choice(templates).format(dev=dev, Dev=cap(dev), s=settings_phrase(rng, device, params))
        if rng.random() < 0.55:
            text += rng.choice(FOLLOW_UP)
        elif rng.random() < 0.3:
            remark = rng.choice(REMARKS + [HOBBY_REMARK] if self.hobby else REMARKS)
            text += remark.format(tod=self.meta["time_of_day"], hobby=self.hobby)
        self.say("assistant", text)

    def device_exchange(self, device, params, first):
        """The user asks for one device; the assistant asks for what is open, or volunteers it."""
        rng = self.rng
        keys = list(params)
        how = rng.choices(["full", "partial", "vague"], [0.4, 0.3, 0.3])[0]
        if how == "partial" and len(keys) > 1:
            shown = set(rng.sample(keys, rng.randint(1, len(keys) - 1)))
        else:
            shown = set(keys) if how != "vague" else set()
        given = {k: v for k, v in params.items() if k in shown}
        missing = {k: v for k, v in params.items() if k not in shown}
        request = self.request(device, given)
        if rng.random() < 0.3:
            request += " " + rng.choice(REASONS[device])
        self.user_turn(first, request)
        if not missing:
            self.confirm(device, params)
        elif rng.random() < self.volunteer_share:
            self.confirm(device, params, PROACTIVE)
        else:
            words = listing([PARAM_WORDS[k] + (" state" if k == "armed" else "") for k in missing])
            s = settings_phrase(rng, device, missing)
            if given and rng.random() < 0.4:
                self.say("assistant", rng.choice(AS_WELL).format(params=words))
                self.say("user", rng.choice(YES).format(params=words, s=s))
            else:
                dev = self.dev(device)
                self.say("assistant", rng.choice(ASK_BACK).format(params=words, dev=dev))
                self.say("user", self.voice("answer").format(s=s, S=cap(s)))
            self.confirm(device, params)
        if rng.random() < 0.03:
            user, assistant = rng.choice(SMALL_TALK)
            self.say("user", user)
            self.say("assistant", assistant)

    def closing(self):
        name = f", {self.persona['name']}" if self.rng.random() < self.cues["names"] else ""
        self.say("user", self.voice("thanks"))
        self.say("assistant", self.rng.choice(CLOSING).format(name=name, tod=self.meta["time_of_day"]))


def random_settings(rng, avoid):
    """2-3 devices with random settings that differ from `avoid` (a routine's actions)."""
    out = {}
    for device in rng.sample(sorted(DEVICES), rng.choice([2, 2, 3])):
        values = routine_values(rng, device, random_context(rng))
        keep = rng.sample(sorted(values), rng.randint(1, len(values)))
        params = {k: values[k] for k in keep}
        if params == {k: avoid.get(device, {}).get(k) for k in keep}:
            continue
        out[device] = params
    return out or {"lights": {"brightness": 55}}


def make_session(rng, persona, routines, session_id, options):
    routine_driven = rng.random() < 0.75
    if routine_driven:
        index = rng.randrange(len(routines))
        routine = routines[index]
        meta = {**random_context(rng), **routine["triggers"]}
        actions = active_actions(routine["actions"])
    else:
        for _ in range(200):
            meta = random_context(rng)
            if not any(triggers_match(r["triggers"], meta) for r in routines):
                break
        actions = random_settings(rng, {})
    # only routine values are volunteered: a spontaneous session's settings are the user's whim
    writer = Writer(rng, persona, meta, options, options.proactive_share if routine_driven else 0.0)
    devices = list(actions)
    rng.shuffle(devices)
    for i, device in enumerate(devices):
        writer.device_exchange(device, actions[device], first=i == 0)
    if rng.random() < 0.7:  # otherwise the session ends on the assistant's last confirmation
        writer.closing()
    summary = None
    if routine_driven:
        summary = (f"The user set {', '.join(devices)} in their usual way "
                   f"for a {meta['weather']} {meta['time_of_day']}.")
    return {"session_id": session_id, "meta": meta, "messages": writer.messages,
            "applied_routines": [index] if routine_driven else None, "session_summarization": summary}


def generate(n_personas, n_sessions, seed, options=WordingOptions()):
    """(characters, routines, sessions) rows, one per persona, deterministic for a seed and options."""
    if options.identity_cues not in IDENTITY_CUES:
        raise ValueError(f"identity_cues must be one of {IDENTITY_CUES}, got {options.identity_cues!r}")
    rng = random.Random(seed)
    shared = make_routines(random.Random(f"shared-{seed}")) if options.shared_preferences else None
    characters, routines_rows, sessions_rows, used = [], [], [], set()
    for _ in range(n_personas):
        persona = make_character(rng, used, CUE_LEVELS[options.identity_cues]["own_voice_personas"])
        routines = copy.deepcopy(shared) if shared else make_routines(rng)
        sessions = [make_session(rng, persona, routines, s, options) for s in range(n_sessions)]
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
