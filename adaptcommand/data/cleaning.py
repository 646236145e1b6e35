"""Validating the three raw EdgeWisePersona files and merging them into one dialogue per line.

Line i of characters.jsonl, routines.jsonl and sessions.jsonl is persona i (`persona_000`, ...).
Every record is checked against the schema (adaptcommand/data/schema.py). Strict: any problem means no
dialogues are kept. Lenient: a bad character or routines line drops that persona, a bad session
drops that session, and both are listed. Whitespace is normalised, empty messages are dropped, and
dialogues left without a user and an assistant message are dropped as degenerate; all of it is
counted in the report.
"""

from pathlib import Path

from adaptcommand.data.data_io import UserError, read_jsonl_lenient
from adaptcommand.data.schema import RAW_FILES, ROLES, TRIGGERS, routine_problems, trigger_problem


def character_problems(record):
    if not isinstance(record, dict):
        return ["expected a JSON object"]
    if "character" not in record:
        return ["missing field 'character'"]
    if not isinstance(record["character"], str):
        return ["'character' is not a string"]
    return []


def routines_problems(record):
    if not isinstance(record, dict):
        return ["expected a JSON object"]
    if not isinstance(record.get("routines"), list):
        return ["missing list field 'routines'"]
    return [f"routine {i}: {p}" for i, r in enumerate(record["routines"]) for p in routine_problems(r)]


def session_problems(session, n_routines):
    """Problems of one session object; n_routines bounds its applied_routines indices."""
    if not isinstance(session, dict):
        return ["session is not an object"]
    problems = [f"missing field {key!r}" for key in ("session_id", "meta", "messages", "applied_routines")
                if key not in session]
    if problems:
        return problems
    if isinstance(session["session_id"], bool) or not isinstance(session["session_id"], int):
        problems.append("session_id is not an integer")
    meta = session["meta"]
    if not isinstance(meta, dict):
        problems.append("meta is not an object")
    else:
        problems += [f"meta missing {name!r}" for name in TRIGGERS if name not in meta]
        problems += [f"meta: {p}" for name, value in meta.items() if (p := trigger_problem(name, value))]
    messages = session["messages"]
    if not isinstance(messages, list):
        problems.append("messages is not a list")
    else:
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message or "text" not in message:
                problems.append(f"messages[{i}] needs 'role' and 'text'")
            elif message["role"] not in ROLES:
                problems.append(f"messages[{i}]: unknown role {message['role']!r}")
            elif not isinstance(message["text"], str):
                problems.append(f"messages[{i}]: text is not a string")
    applied = session["applied_routines"]
    if applied is not None:
        if not isinstance(applied, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in applied):
            problems.append("applied_routines is not a list of integers or null")
        else:
            problems += [f"applied_routines index {i} out of range (persona has {n_routines} routines)"
                         for i in applied if not 0 <= i < n_routines]
    summary = session.get("session_summarization")
    if summary is not None and not isinstance(summary, str):
        problems.append("session_summarization is not a string or null")
    return problems


def clean_messages(messages, counts):
    out = []
    for message in messages:
        text = " ".join(message["text"].split())
        if not text:
            counts["empty_messages_dropped"] += 1
            continue
        out.append({"role": message["role"], "text": text})
    return out


def load_raw(raw_dir):
    """Read the three files; returns (rows per file, problems). Line counts must agree."""
    rows, problems = {}, []
    for name in RAW_FILES:
        try:
            rows[name], file_problems = read_jsonl_lenient(Path(raw_dir) / name)
        except UserError as err:
            problems.append(str(err))
            continue
        problems += file_problems
    if len(rows) == len(RAW_FILES):
        counts = {name: len(r) for name, r in rows.items()}
        if len(set(counts.values())) > 1:
            problems.append("files are not line-aligned: " + ", ".join(f"{n} has {c} lines" for n, c in counts.items()))
    return rows, problems


def clean(raw_dir, lenient=False):
    """(dialogues, report, problems). In strict mode any problem means no dialogues are kept."""
    rows, problems = load_raw(raw_dir)
    if len(rows) < len(RAW_FILES) or (problems and not lenient):
        return [], {}, problems
    counts = {"personas_in": 0, "personas_kept": 0, "sessions_in": 0, "dialogues_kept": 0,
              "empty_messages_dropped": 0, "degenerate_dialogues_dropped": 0, "records_skipped": 0,
              "personas_without_dialogues": []}
    dialogs = []
    n = min(len(r) for r in rows.values())
    for index in range(n):
        (c_line, character), (r_line, routines), (s_line, sessions) = (rows[f][index] for f in RAW_FILES)
        counts["personas_in"] += 1
        persona_problems = [f"characters.jsonl:{c_line}: {p}" for p in character_problems(character)] if character is not None else []
        persona_problems += [f"routines.jsonl:{r_line}: {p}" for p in routines_problems(routines)] if routines is not None else []
        if sessions is not None and not (isinstance(sessions, dict) and isinstance(sessions.get("sessions"), list)):
            persona_problems.append(f"sessions.jsonl:{s_line}: missing list field 'sessions'")
        if persona_problems or None in (character, routines, sessions):
            problems += persona_problems
            counts["records_skipped"] += 1
            continue
        persona_id = f"persona_{index:03d}"
        kept_any = False
        for k, session in enumerate(sessions["sessions"]):
            counts["sessions_in"] += 1
            bad = session_problems(session, len(routines["routines"]))
            if bad:
                sid = session.get("session_id", "?") if isinstance(session, dict) else "?"
                problems += [f"sessions.jsonl:{s_line}: session {k} (session_id {sid}): {p}" for p in bad]
                counts["records_skipped"] += 1
                continue
            messages = clean_messages(session["messages"], counts)
            if not {m["role"] for m in messages} >= set(ROLES):
                counts["degenerate_dialogues_dropped"] += 1
                continue
            dialogs.append({"persona_id": persona_id, "session_id": session["session_id"],
                            "character": " ".join(character["character"].split()),
                            "routines": routines["routines"], "meta": session["meta"],
                            "applied_routines": session["applied_routines"], "messages": messages})
            kept_any = True
        counts["personas_kept"] += kept_any
        if not kept_any:  # no session at all, or none usable: the persona is left out, by name
            counts["personas_without_dialogues"].append(f"{persona_id} (sessions.jsonl:{s_line})")
    counts["dialogues_kept"] = len(dialogs)
    if problems and not lenient:
        return [], {}, problems
    report = {"raw_dir": str(raw_dir), "lenient": lenient, **counts,
              "messages_kept": sum(len(d["messages"]) for d in dialogs),
              "problems": problems}
    return dialogs, report, problems
