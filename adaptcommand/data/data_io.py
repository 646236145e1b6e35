"""Reading and writing the project's files: JSONL/JSON/CSV, always written atomically.

Every file or folder the project writes goes through `atomic_path`: it is written under a
temporary name in the same folder and renamed into place only when complete, so an interrupted
run never leaves a half-written output under the real name. User mistakes raise `UserError`,
which `run_cli` turns into one line on stderr and exit code 2 instead of a traceback.
"""

import csv
import io
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input: reported as one line (or a few), never a traceback."""


def run_cli(main):
    """Call main(); turn UserError into a clean message and exit code 2, and a file that cannot be written or
    read (a read-only folder, a full disk) into one naming the file and exit code 1."""
    try:
        code = main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except OSError as err:
        print(f"error: {err.filename or 'a file'}: {err.strerror or err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)


def _remove(path):
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextmanager
def atomic_path(path):
    """Yield a temporary sibling of `path` to write a file or a folder into; on success it replaces `path`.

    If the block raises, the temporary is removed and `path` keeps what it had. A folder that
    already exists is moved aside first (os.replace cannot overwrite a non-empty folder) and
    deleted only once the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir() and path.is_dir():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            _remove(old)
            path.rename(old)
            tmp.rename(path)
            _remove(old)
        else:
            os.replace(tmp, path)
    finally:
        _remove(tmp)


def write_text_atomic(path, text):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="")


def write_json(path, obj):
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def write_jsonl(path, rows):
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_csv(path, rows, fieldnames=None):
    fieldnames = fieldnames or list(dict.fromkeys(key for row in rows for key in row))  # union, first-seen order
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(path, buf.getvalue())


def read_json(path, what="file"):
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def read_jsonl(path):
    """All records of a JSONL file; any bad line is a UserError naming file and line."""
    rows, problems = read_jsonl_lenient(path)
    if problems:
        raise UserError(problems[0])
    return [row for _, row in rows]


def read_jsonl_lenient(path):
    """([(line_number, record or None)], [problem, ...]) for a JSONL file; blank lines are skipped.

    A line that is not valid JSON gives (line_number, None) and a problem naming file and line, so
    line-aligned files stay aligned. A missing or empty file, or one that is not UTF-8, is a
    UserError: nothing in it can be trusted.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: file not found")
    data = path.read_bytes()
    if not data.strip():
        raise UserError(f"{path}: empty file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UserError(f"{path.name}:{line}: not UTF-8 text") from None
    rows, problems = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append((number, json.loads(line)))
        except json.JSONDecodeError as err:
            rows.append((number, None))
            problems.append(f"{path.name}:{number}: invalid JSON: {err.msg} (column {err.colno})")
    return rows, problems


def load_dialogs(path):
    """The cleaned dialogues (one per line, as written by clean_data.py)."""
    dialogs = read_jsonl(path)
    if not dialogs:
        raise UserError(f"{path}: no dialogues")
    return dialogs
