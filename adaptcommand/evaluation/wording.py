"""How a dataset talks: the wording rates that decide what reference-matching metrics reward.

`wording_rates(dialogues)` reads message lists with the project's extractor:
- question: share of assistant messages with a "?" (real: the assistant mostly asks);
- unstated value: share of assistant messages that state a (device, param, value) no earlier user
  message gave (the assistant volunteering settings: what per-user memory could predict);
- no action: share of user messages in which the extractor finds no device;
- usual: share of user messages asking for "the usual" / "as always" (a request only memory answers);
- trigram variety: distinct word trigrams / trigrams over the first 6,000 tokens (words with their
  apostrophes and punctuation marks, case kept), a measure of how varied the wording is.

`identity_accuracy(sessions_by_persona)` is how well wording alone tells users apart: a
nearest-centroid classifier on word counts, fit on the user messages of each persona's first 60% of
sessions (the train split) and scored on the user messages of the last 20% (the test split).
"""

import dataclasses
import json
import re
from collections import Counter

import numpy as np

from adaptcommand.data.data_io import UserError
from adaptcommand.evaluation.action_metrics import ActionExtractor, action_triples
from adaptcommand.evaluation.routine_knowledge import message_actions

FIRST_MESSAGES = 5  # the real sample holds the first five messages of a session
TRIGRAM_TOKENS = 6000
TOKEN = re.compile(r"[\w']+|[^\w\s']")
USUAL = re.compile(r"\b(?:usual|usually|as always|like always)\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class WordingRates:
    question: float
    unstated_value: float
    no_action: float
    usual: float
    trigram_variety: float


RATE_LABELS = {
    "question": "assistant messages that ask a question",
    "unstated_value": "assistant messages stating a value the user never gave",
    "no_action": "user messages with no device action",
    "usual": 'user messages asking for "the usual" / "as always"',
    "trigram_variety": f"distinct word trigrams per trigram ({TRIGRAM_TOKENS:,} tokens)",
}


def trigram_variety(texts, n_tokens=TRIGRAM_TOKENS):
    tokens = [t for text in texts for t in TOKEN.findall(text)][:n_tokens]
    trigrams = list(zip(tokens, tokens[1:], tokens[2:]))
    return len(set(trigrams)) / len(trigrams) if trigrams else 0.0


def wording_rates(dialogues, extractor=None):
    """WordingRates of message lists ([{"role", "text"}, ...]), each read as a whole dialogue."""
    extract = (extractor or ActionExtractor()).extract_actions
    asked = volunteered = assistant = no_action = usual = user = 0
    for messages in dialogues:
        given = set()
        for message, actions in zip(messages, message_actions({"messages": messages}, extract)):
            if message["role"] == "assistant":
                assistant += 1
                asked += "?" in message["text"]
                volunteered += bool(action_triples(actions) - given)
            else:
                user += 1
                no_action += not actions
                usual += bool(USUAL.search(message["text"]))
                given |= action_triples(actions)
    texts = [m["text"] for messages in dialogues for m in messages]
    return WordingRates(question=asked / max(assistant, 1), unstated_value=volunteered / max(assistant, 1),
                        no_action=no_action / max(user, 1), usual=usual / max(user, 1),
                        trigram_variety=trigram_variety(texts))


def opening_excerpts(sessions_rows, n_messages=FIRST_MESSAGES):
    """The first messages of every session, session-major (every persona's session 0, then 1, ...)
    so that a 6,000-token window spans many users, as the real sample (one session per user) does."""
    n_sessions = max(len(row["sessions"]) for row in sessions_rows)
    return [row["sessions"][s]["messages"][:n_messages]
            for s in range(n_sessions) for row in sessions_rows if s < len(row["sessions"])]


def read_sample(path):
    """Message lists of the real sample (../shared/data/edgewisepersona_sample/dialogues.jsonl)."""
    dialogues = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                dialogues.append(json.loads(line)["messages"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{line_no}: expected a JSON object with 'messages'") from None
    return dialogues


def _counts(text, vocabulary):
    vector = np.zeros(len(vocabulary))
    for word, n in Counter(TOKEN.findall(text.lower())).items():
        if word in vocabulary:
            vector[vocabulary[word]] += n
    return vector


def train_test_sessions(sessions, train_share=0.6, test_share=0.2):
    """(first 60%, last 20%) of one persona's sessions, create_splits' default shares; None if either is empty."""
    n_train, n_test = int(len(sessions) * train_share), max(1, int(len(sessions) * test_share))
    if n_train == 0 or n_train + n_test > len(sessions):
        return None
    return sessions[:n_train], sessions[-n_test:]


def _messages(sessions, role):
    return [m["text"] for s in sessions for m in s["messages"] if m["role"] == role]


def identity_accuracy(sessions_rows):
    """Share of test-split user messages whose persona a nearest-centroid word-count classifier names.

    Chance is 1 / number of personas. Centroids are the mean unit-length count vector of each
    persona's train-split user messages; a message goes to the centroid of highest cosine. None when
    a persona has too few sessions for both splits.
    """
    train, test = [], []
    for persona, row in enumerate(sessions_rows):
        parts = train_test_sessions(row["sessions"])
        if parts is None:
            return None
        train += [(persona, text) for text in _messages(parts[0], "user")]
        test += [(persona, text) for text in _messages(parts[1], "user")]
    if not train or not test:
        return None
    vocabulary = {w: i for i, w in enumerate(sorted({w for _, t in train for w in TOKEN.findall(t.lower())}))}

    def unit(text):
        v = _counts(text, vocabulary)
        return v / (np.linalg.norm(v) or 1.0)

    centroids = np.zeros((len(sessions_rows), len(vocabulary)))
    for persona, text in train:
        centroids[persona] += unit(text)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True).clip(min=1e-12)
    guesses = np.argmax(np.stack([unit(t) for _, t in test]) @ centroids.T, axis=1)
    return float(np.mean(guesses == np.array([p for p, _ in test])))


def repeated_references(sessions_rows):
    """Share of test-split assistant messages that occur word for word in some train-split session
    (of any persona): such references reward a model for recalling training text, not for knowing the user."""
    seen, test = set(), []
    for parts in filter(None, (train_test_sessions(row["sessions"]) for row in sessions_rows)):
        seen.update(_messages(parts[0], "assistant"))
        test += _messages(parts[1], "assistant")
    return sum(t in seen for t in test) / max(len(test), 1)
