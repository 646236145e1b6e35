"""The evaluation unit and metric suite every arm shares.

Unit: every assistant turn of every dialogue of a split, predicted from the ground-truth history
before it. Per turn: ROUGE-1/2/L F1, embedding cosine similarity (all-MiniLM-L6-v2), the action
metrics of adaptcommand/evaluation/action_metrics.py (parameter F1 split into values the user gave earlier and
private ones), the routine-knowledge counts of adaptcommand/evaluation/routine_knowledge.py, and
prediction/reference lengths. Runs aggregate as means for the text metrics, micro sums for the
action counts and session-pooled routine knowledge; the study's tables are per persona, then macro.
"""

from collections import defaultdict

import numpy as np

from adaptcommand.evaluation.action_metrics import ActionExtractor, ActionMetrics, action_triples
from adaptcommand.evaluation.routine_knowledge import (
    knowledge_metrics,
    message_actions,
    session_settings,
    turn_knowledge,
)
from adaptcommand.model.prompting import HistoryRetriever, build_turn_messages, render_prompt

TEXT_METRICS = ("rouge1", "rouge2", "rougeL", "embedding_similarity", "pred_words", "ref_words")


def collect_turns(dialogs, indices_by_persona, max_examples=None):
    """Every assistant turn of the given dialogues ({persona: indices}), in order, capped at max_examples.

    Turns carry the split file's persona name, which need not be the dialogues file's.
    """
    turns = []
    for persona, indices in indices_by_persona.items():
        for index in indices:
            dialog = dialogs[index]
            for t, message in enumerate(dialog["messages"]):
                if message["role"] != "assistant":
                    continue
                turns.append({"persona_id": persona, "dialog_index": index,
                              "session_id": dialog["session_id"], "turn_index": t, "reference": message["text"]})
                if max_examples and len(turns) >= max_examples:
                    return turns
    return turns


def build_prompts(tokenizer, dialogs, turns, prompt_cfg, retriever=None):
    """Rendered prompts for the turns, with retrieved history when the config asks for it."""
    retrieved = [()] * len(turns)
    if prompt_cfg.retrieval:
        if retriever is None:
            raise ValueError("a retrieval prompt needs a HistoryRetriever")
        queries = [(t["persona_id"], dialogs[t["dialog_index"]]["messages"][:t["turn_index"]], t["dialog_index"])
                   for t in turns]
        retrieved = retriever.retrieve_many(queries)
    return [render_prompt(tokenizer, build_turn_messages(dialogs[t["dialog_index"]], t["turn_index"], prompt_cfg, r))
            for t, r in zip(turns, retrieved)]


def make_retriever(embedder, dialogs, splits, k):
    return HistoryRetriever(embedder, dialogs, {p: v["train"] for p, v in splits.items()}, k)


REFERENCE_CACHE = 20_000  # reference embeddings kept: about 30 MB with all-MiniLM-L6-v2


class TurnScorer:
    def __init__(self, embedder):
        from rouge_score import rouge_scorer

        self.embedder = embedder
        self.rouge = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
        self.extract = ActionExtractor().extract_actions
        self._dialog_cache = {}
        self._vector_cache = {}

    def encode(self, texts):
        if not texts:
            return np.zeros((0, 1))
        return np.asarray(self.embedder.encode(texts, normalize_embeddings=True, batch_size=64, show_progress_bar=False))

    def reference_vectors(self, refs):
        """Embeddings of reference replies, each encoded once: every arm is scored against the same references.
        The cache is emptied past REFERENCE_CACHE texts, so memory does not grow with the personas evaluated."""
        new = [t for t in dict.fromkeys(refs) if t not in self._vector_cache]
        if len(self._vector_cache) + len(new) > REFERENCE_CACHE:
            self._vector_cache.clear()
            new = list(dict.fromkeys(refs))
        self._vector_cache.update(zip(new, self.encode(new)))
        return np.stack([self._vector_cache[t] for t in refs]) if refs else np.zeros((0, 1))

    def dialog_state(self, dialogs, index):
        """(actions of every message, testable routine settings) of a dialogue, computed once."""
        if index not in self._dialog_cache:
            actions = message_actions(dialogs[index], self.extract)
            self._dialog_cache[index] = (actions, session_settings(dialogs[index], actions))
        return self._dialog_cache[index]

    def score(self, dialogs, turns, predictions):
        """One record per turn (collect_turns' turns: the reference is message turn_index of its dialogue):
        the metrics, the extracted actions and the counts to aggregate."""
        refs = [t["reference"] for t in turns]
        pred_vec, ref_vec = self.encode(predictions), self.reference_vectors(refs)
        records = []
        for k, (turn, pred) in enumerate(zip(turns, predictions)):
            dialog = dialogs[turn["dialog_index"]]
            t = turn["turn_index"]
            history = dialog["messages"][:t]
            actions, settings = self.dialog_state(dialogs, turn["dialog_index"])
            given = set().union(*(action_triples(actions[j]) for j, m in enumerate(history) if m["role"] == "user"))
            pred_actions = self.extract(pred, history)
            ref_actions = actions[t]  # the reference is message t, already read with its history
            rouge = self.rouge.score(turn["reference"], pred)
            records.append({
                **turn, "prediction": pred,
                "rouge1": rouge["rouge1"].fmeasure, "rouge2": rouge["rouge2"].fmeasure, "rougeL": rouge["rougeL"].fmeasure,
                "embedding_similarity": float(pred_vec[k] @ ref_vec[k]),
                "pred_words": len(pred.split()), "ref_words": len(turn["reference"].split()),
                "pred_actions": pred_actions, "ref_actions": ref_actions,
                "action_counts": ActionMetrics.compare_actions(pred_actions, ref_actions, given),
                "knowledge": turn_knowledge(settings, t, pred_actions),
            })
        return records


def aggregate(records):
    """Run-level metrics: means of text metrics, micro action metrics, pooled routine knowledge,
    and macro (mean over personas) routine F1, parameter F1 and device F1 beside them."""
    if not records:
        return {"turns": 0}
    out = {"turns": len(records), "personas": len({r["persona_id"] for r in records})}
    for key in TEXT_METRICS:
        out[key] = float(np.mean([r[key] for r in records]))
    out.update(ActionMetrics.aggregate([r["action_counts"] for r in records]))
    out.update(knowledge_metrics(records))
    by_persona = defaultdict(list)
    for r in records:
        by_persona[r["persona_id"]].append(r)
    out.update({f"macro_{k}": v for k, v in ActionMetrics.macro(
        {p: [r["action_counts"] for r in rs] for p, rs in by_persona.items()}).items()
        if k in ("device_f1", "param_f1", "param_private_f1")})
    routine = [knowledge_metrics(rs)["routine_f1"] for rs in by_persona.values()]
    routine = [f for f in routine if f is not None]
    out["macro_routine_f1"] = float(np.mean(routine)) if routine else None
    return out


def aggregate_per_persona(records):
    by_persona = defaultdict(list)
    for r in records:
        by_persona[r["persona_id"]].append(r)
    return {p: aggregate(rs) for p, rs in sorted(by_persona.items())}


def sample_record(record, dialogs):
    dialog = dialogs[record["dialog_index"]]
    return {"persona_id": record["persona_id"], "session_id": record["session_id"], "turn_index": record["turn_index"],
            "history": dialog["messages"][: record["turn_index"]], "prediction": record["prediction"],
            "reference": record["reference"], "pred_actions": record["pred_actions"], "ref_actions": record["ref_actions"]}


SUMMARY_COLUMNS = ("turns", "routine_f1", "routine_recall", "routine_precision", "param_f1", "param_given_f1",
                   "param_private_f1", "device_f1", "numerical_exact", "numerical_coverage", "categorical_accuracy",
                   "categorical_coverage", "embedding_similarity", "rougeL")


def summary_rows(per_persona):
    return [{"persona_id": p, **{k: m.get(k) for k in SUMMARY_COLUMNS}} for p, m in per_persona.items()]


def format_metrics(metrics):
    keys = [k for k in SUMMARY_COLUMNS if k != "turns"]
    return "  ".join(f"{k}={metrics[k]:.3f}" if isinstance(metrics.get(k), float) else f"{k}=n/a" for k in keys)
