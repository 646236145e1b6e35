"""The one prompt builder that baseline, training and evaluation share.

A prompt is the system message (template, optionally the user's character sketch and compact
retrieved past dialogues), then the last `max_context_messages` messages of ground-truth history.
Training renders whole dialogues with the same system message, so train and test prompts agree.
"""

import numpy as np

CHARACTER_HEADER = "About the user:"
RETRIEVED_HEADER = "Earlier conversations with this user:"


def dialog_text(messages):
    return "\n".join(f"{m['role'].capitalize()}: {m['text']}" for m in messages)


def compact_dialog(messages, max_messages, max_chars=160):
    """One retrieved dialogue on a few short lines."""
    return " | ".join(f"{m['role'].capitalize()}: {m['text'][:max_chars]}" for m in messages[:max_messages])


def system_prompt(prompt_cfg, character=None, retrieved=()):
    parts = [prompt_cfg.system_template]
    if prompt_cfg.include_character and character:
        parts.append(f"{CHARACTER_HEADER} {character}")
    if retrieved:
        lines = [f"[{i}] {compact_dialog(d['messages'], prompt_cfg.retrieved_max_messages)}"
                 for i, d in enumerate(retrieved, start=1)]
        parts.append(RETRIEVED_HEADER + "\n" + "\n".join(lines))
    return "\n\n".join(parts)


def chat_messages(system, messages):
    return [{"role": "system", "content": system}] + [{"role": m["role"], "content": m["text"]} for m in messages]


def build_turn_messages(dialog, turn_index, prompt_cfg, retrieved=()):
    """Chat messages to predict dialog['messages'][turn_index] from the history before it."""
    history = dialog["messages"][:turn_index]
    keep = prompt_cfg.max_context_messages
    history = history[-keep:] if keep > 0 else []
    return chat_messages(system_prompt(prompt_cfg, dialog.get("character"), retrieved), history)


def render_prompt(tokenizer, messages):
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


class HistoryRetriever:
    """The k train dialogues of the same persona most similar to the current history (cosine).

    Only train-split dialogues are candidates, so a test prompt never sees the test period; a
    train dialogue never retrieves itself.
    """

    def __init__(self, embedder, dialogs, train_indices_by_persona, k):
        self.embedder, self.dialogs, self.k = embedder, dialogs, k
        self.candidates = {p: list(ix) for p, ix in train_indices_by_persona.items()}
        self._vectors = {}

    def _persona_vectors(self, persona):
        if persona not in self._vectors:
            texts = [dialog_text(self.dialogs[i]["messages"]) for i in self.candidates.get(persona, [])]
            self._vectors[persona] = self.embed(texts) if texts else np.zeros((0, 1))
        return self._vectors[persona]

    def embed(self, texts):
        return np.asarray(self.embedder.encode(texts, normalize_embeddings=True, show_progress_bar=False))

    def retrieve_many(self, queries):
        """queries: [(persona_id, history messages, own dialog index or None)] -> [list of dialogs]."""
        if self.k <= 0:
            return [[] for _ in queries]
        query_vectors = self.embed([dialog_text(h) or " " for _, h, _ in queries])
        out = []
        for (persona, _, own), q in zip(queries, query_vectors):
            vectors = self._persona_vectors(persona)
            ranked = [self.candidates[persona][j] for j in np.argsort(-(vectors @ q), kind="stable")] if len(vectors) else []
            out.append([self.dialogs[i] for i in ranked if i != own][: self.k])
        return out
