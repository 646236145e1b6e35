"""The EdgeWisePersona schema: triggers, devices, their parameters and allowed values.

One place that make_demo_data, clean_data and action_metrics all read, so the generator, the
validator and the extractor can never disagree about what a valid setting is.
"""

# The dataset's three line-aligned raw files: line i of each is user i.
RAW_FILES = ("characters.jsonl", "routines.jsonl", "sessions.jsonl")

TRIGGERS = {
    "time_of_day": ["morning", "afternoon", "evening", "night"],
    "day_of_week": ["weekday", "weekend"],
    "sun_phase": ["before_sunrise", "daylight", "after_sunset"],
    "weather": ["sunny", "cloudy", "rainy", "snowy"],
    "outdoor_temp": ["very cold", "cold", "mild", "warm", "hot"],
}

# A parameter is ("int", low, high), ("bool",) or ("cat", [allowed values]).
DEVICES = {
    "tv": {
        "volume": ("int", 0, 100),
        "brightness": ("int", 0, 100),
        "input_source": ("cat", ["HDMI1", "HDMI2", "AV", "Netflix", "YouTube"]),
    },
    "ac": {
        "temperature": ("int", 16, 30),
        "mode": ("cat", ["cool", "heat", "auto"]),
        "fan_speed": ("int", 0, 3),
    },
    "lights": {
        "brightness": ("int", 0, 100),
        "color": ("cat", ["warm", "cool", "neutral"]),
        "mode": ("cat", ["static", "dynamic"]),
    },
    "speaker": {
        "volume": ("int", 0, 100),
        "equalizer": ("cat", ["bass boost", "balanced", "treble boost"]),
    },
    "security": {
        "armed": ("bool",),
        "alarm_volume": ("int", 0, 100),
    },
}

ROLES = ("user", "assistant")


def value_problem(device, param, value):
    """Return why `value` is not valid for device.param, or None when it is."""
    if device not in DEVICES:
        return f"unknown device {device!r}"
    if param not in DEVICES[device]:
        return f"unknown parameter {device}.{param}"
    spec = DEVICES[device][param]
    if spec[0] == "bool":
        return None if isinstance(value, bool) else f"{device}.{param} must be true/false, got {value!r}"
    if spec[0] == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{device}.{param} must be an integer, got {value!r}"
        if not spec[1] <= value <= spec[2]:
            return f"{device}.{param}={value} outside {spec[1]}..{spec[2]}"
        return None
    return None if value in spec[1] else f"{device}.{param}={value!r} not one of {spec[1]}"


def trigger_problem(name, value):
    """Return why a trigger name/value is invalid, or None."""
    if name not in TRIGGERS:
        return f"unknown trigger {name!r}"
    return None if value in TRIGGERS[name] else f"trigger {name}={value!r} not one of {TRIGGERS[name]}"


def routine_problems(routine):
    """Problems of one routine {"triggers": {...}, "actions": {...}}; devices may be null."""
    if not isinstance(routine, dict):
        return ["routine is not an object"]
    problems = []
    for key in ("triggers", "actions"):
        if not isinstance(routine.get(key), dict):
            problems.append(f"routine missing object field {key!r}")
    if problems:
        return problems
    for name, value in routine["triggers"].items():
        if value is not None and (p := trigger_problem(name, value)):
            problems.append(p)
    for device, params in routine["actions"].items():
        if params is None:
            if device not in DEVICES:
                problems.append(f"unknown device {device!r}")
            continue
        if not isinstance(params, dict):
            problems.append(f"actions.{device} is not an object")
            continue
        for param, value in params.items():
            if value is not None and (p := value_problem(device, param, value)):
                problems.append(p)
    return problems


def active_actions(actions):
    """{device: {param: value}} without the devices and parameters a routine leaves alone (null)."""
    return {
        device: {p: v for p, v in params.items() if v is not None}
        for device, params in (actions or {}).items()
        if params is not None
    }


def triggers_match(triggers, meta):
    """True when every trigger the routine sets equals the session's meta value."""
    return all(meta.get(name) == value for name, value in triggers.items() if value is not None)
