"""Per-persona train/val/test/online splits in the documented `edgesplits.json` format.

    {"persona_000": {"train": [0, ..., 29], "val": [30, ..., 39], "test": [40, ..., 49], "online": [20, ..., 29]}, ...}

Each persona maps to its own indices into the cleaned dialogues file (0-based line numbers of
dialogs_clean.jsonl); the earlier attempt's split files have exactly this shape. Any tool may
write one: indices need not be in session order, and `online` (a slice for incremental-update
studies) may overlap `train`. `create_splits.py` writes ratios, source and checks to
`split_report.json` beside it, never into the split file.
"""

from collections import defaultdict

from adaptcommand.data.data_io import UserError, read_json

SPLIT_NAMES = ("train", "val", "test")
OPTIONAL_SPLITS = ("online",)


def split_sizes(n, ratios):
    """(train, val, test) counts for n dialogues; val and test get at least one each."""
    n_val = max(1, round(n * ratios[1]))
    n_test = max(1, round(n * ratios[2]))
    return n - n_val - n_test, n_val, n_test


def make_splits(dialogs, ratios=(0.6, 0.2, 0.2), online_k=5, min_dialogues=10):
    """Temporal splits per persona: the earliest sessions train, the next validate, the latest test."""
    by_persona = defaultdict(list)
    for index, dialog in enumerate(dialogs):
        by_persona[dialog["persona_id"]].append(index)
    too_few = {p: len(ix) for p, ix in by_persona.items() if len(ix) < min_dialogues}
    if too_few:
        listed = ", ".join(f"{p} ({n})" for p, n in sorted(too_few.items())[:10])
        raise UserError(f"{len(too_few)} persona(s) have fewer than {min_dialogues} dialogues: {listed}; "
                        f"lower --min_dialogues (at least 3) to split them anyway")
    splits = {}
    for persona, indices in sorted(by_persona.items()):
        indices.sort(key=lambda i: (dialogs[i]["session_id"], i))
        n_train, n_val, _ = split_sizes(len(indices), ratios)
        train = indices[:n_train]
        splits[persona] = {"train": train, "val": indices[n_train:n_train + n_val],
                           "test": indices[n_train + n_val:], "online": train[-online_k:] if online_k else []}
    return splits


def split_report(splits, dialogs):
    """The checks of a split against its dialogues; every boolean must be true for a usable split."""
    sets = {name: {i for p in splits.values() for i in p[name]} for name in SPLIT_NAMES}
    train, val, test = (sets[name] for name in SPLIT_NAMES)

    def session_ids(p, name):
        return [dialogs[i]["session_id"] for i in p[name]]

    ordered = all(max(session_ids(p, "train"), default=-1) < min(session_ids(p, "val"), default=float("inf"))
                  and max(session_ids(p, "val"), default=-1) < min(session_ids(p, "test"), default=float("inf"))
                  for p in splits.values())
    sizes = {name: [len(p[name]) for p in splits.values()] for name in SPLIT_NAMES}
    return {
        "no_overlap": not (train & val or train & test or val & test),
        "complete": len(train | val | test) == len(dialogs),
        "temporal_order": ordered,
        "online_within_train": all(set(p["online"]) <= set(p["train"]) for p in splits.values()),
        "personas": len(splits),
        "counts": {name: sum(len(p.get(name, [])) for p in splits.values()) for name in SPLIT_NAMES + OPTIONAL_SPLITS},
        "per_persona_min_max": {name: [min(v), max(v)] for name, v in sizes.items()},
    }


def _index_list(value):
    return isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in value)


def persona_problem(entry):
    """Why one persona's entry of a split file is unusable, or None."""
    if not isinstance(entry, dict):
        return f"expected an object with {'/'.join(SPLIT_NAMES)} index lists, got {type(entry).__name__}"
    for name in SPLIT_NAMES + OPTIONAL_SPLITS:
        if name not in entry:
            if name in SPLIT_NAMES:
                return f"missing {name!r} list"
        elif not _index_list(entry[name]):
            return f"{name!r} must be a list of non-negative integer indices"
    if not entry["train"] and not entry["val"] and not entry["test"]:
        return "no dialogues in train, val or test"
    seen = {}
    for name in SPLIT_NAMES:
        for i in entry[name]:
            if i in seen and seen[i] != name:
                return f"dialogue {i} is in both {seen[i]!r} and {name!r}"
            seen[i] = name
    return None


def ownership_problem(splits, dialogs):
    """Why a split does not index this dialogues file, or None; the first problem as (persona, reason).

    Indices must be in range, and each persona's dialogues must all belong to one persona of the
    file, a different one for each split persona. The names need not match: another tool's split
    may name personas its own way, and the split's names are the ones every script reports.
    """
    owner_of = {}
    for persona, entry in splits.items():
        owners = set()
        for name in SPLIT_NAMES + OPTIONAL_SPLITS:
            for i in entry[name]:
                if i >= len(dialogs):
                    return persona, f"{name!r} index {i} is past the end of the dialogues file ({len(dialogs)} dialogues)"
                owners.add(dialogs[i].get("persona_id"))
        if len(owners) > 1:
            return persona, (f"its indices point at dialogues of {len(owners)} personas of the dialogues file "
                             f"({', '.join(sorted(map(str, owners))[:3])}): the split file does not belong to it")
        for owner in owners:
            if owner in owner_of:
                return persona, (f"its dialogues are {owner}'s, as are {owner_of[owner]!r}'s: the split file does "
                                 f"not belong to this dialogues file")
            owner_of[owner] = persona
    return None


def load_splits(path, dialogs=None):
    """{persona: {"train", "val", "test", "online"}} from a split file in the documented format.

    With `dialogs` (the cleaned dialogues) the indices are also checked against that file
    (`ownership_problem`). A malformed file is a UserError naming the file and the persona.
    """
    raw = read_json(path, "split file")
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{path}: a split file must be a non-empty JSON object of persona id -> "
                        f"{{train, val, test, online}} index lists")
    if "per_persona" in raw:
        raise UserError(f"{path}: an old-format split file (top-level 'per_persona'); rerun create_splits.py")
    splits = {}
    for persona in sorted(raw):
        problem = persona_problem(raw[persona])
        if problem:
            raise UserError(f"{path}: persona {persona!r}: {problem}")
        splits[persona] = {name: list(raw[persona].get(name, [])) for name in SPLIT_NAMES + OPTIONAL_SPLITS}
    if dialogs is not None:
        problem = ownership_problem(splits, dialogs)
        if problem:
            raise UserError(f"{path}: persona {problem[0]!r}: {problem[1]}")
    return splits


def choose_personas(splits, personas_arg=None, max_personas=None):
    """The personas a run covers: --personas p1,p2 (checked against the split), else the first N, else all."""
    known = sorted(splits)
    if personas_arg:
        chosen = list(dict.fromkeys(p.strip() for p in personas_arg.split(",") if p.strip()))
        unknown = [p for p in chosen if p not in splits]
        if unknown:
            raise UserError(f"unknown persona(s) {', '.join(unknown)}; the split file has "
                            f"{', '.join(known[:5])}{', ...' if len(known) > 5 else ''}")
        return chosen
    return known[:max_personas] if max_personas else known


def split_indices(splits, split, personas):
    """{persona: dialogue indices of one split}, for the given personas."""
    return {p: splits[p][split] for p in personas}
