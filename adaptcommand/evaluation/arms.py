"""Which model serves each arm, and the generation rows of an evaluation.

Prompt arms (baseline, character, retrieval) run on the base model. LoRA arms run through one
AdapterStore on that model (adaptcommand/model/serving.py): the unified adapter and the per-user
adapters of a group of personas, of every training seed found, sit side by side and each row of a
batch names its own; the evaluation serves the personas a group at a time.
Adapters trained on top of the unified one (per-user-on-unified and its comparator) need the unified
adapter of their seed merged into the base first, so they get another copy of the model per seed;
prefix-tuning adapters (the prefix arms) get one more copy (PEFT keeps prefix and LoRA adapters apart, and runs prefix adapters
one at a time): a `ModelGroup` is one loaded model and the arms it serves. Reference policies (echo, oracle, silent) need no model at all.
"""

from dataclasses import dataclass, field
from pathlib import Path

from adaptcommand.evaluation.evaluation import aggregate_per_persona, build_prompts
from adaptcommand.evaluation.predictions import adapter_hash, generate_or_reuse
from adaptcommand.model.adapters import (
    adapter_problem,
    arm_folder,
    attach_adapters,
    folder_problem,
    is_complete,
    merge_unified,
    seeds_found,
)
from adaptcommand.model.arm_registry import ARMS, LORA, PREFIX, PROMPT, arm_prompt
from adaptcommand.model.modeling import load_model_and_tokenizer, model_identity
from adaptcommand.model.serving import BASE, AdapterStore, routes_adapters, store_of


@dataclass
class ArmAdapters:
    """An adapter arm's folders: {persona: {seed: folder}} usable, the personas without any, and
    {folder: reason} for folders that exist but cannot be used."""
    found: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)
    unusable: dict = field(default_factory=dict)

    def seeds(self):
        return sorted({s for by_seed in self.found.values() for s in by_seed})

    def drop(self, persona, seed, reason):
        """Set one adapter aside as unusable; a persona left with no seed becomes missing."""
        folder = self.found[persona].pop(seed)
        self.unusable[str(folder)] = reason
        if not self.found[persona]:
            del self.found[persona]
            self.missing = sorted(set(self.missing) | {persona})


def find_adapters(cfg, arms, personas):
    """{adapter arm: ArmAdapters} for the arms asked for, over every seed folder found under each arm's root.

    An adapter trained on the unified one (an arm's `on_unified`) of seed s counts only beside a complete unified
    adapter of seed s.
    """
    adapters = cfg.adapters
    found = {}
    for arm in arms:
        if not ARMS[arm].has_adapters:
            continue
        on_unified = ARMS[arm].on_unified
        complete, unusable = {}, {}
        for seed in seeds_found(adapters.root(arm)):
            unified = arm_folder(adapters, on_unified, seed=seed) if on_unified else None
            for p in personas:
                folder = Path(arm_folder(adapters, arm, p, seed))
                problem = folder_problem(folder) if folder.is_dir() else "no folder"
                if problem is None and unified is not None and not is_complete(unified):
                    problem = f"its unified adapter {unified} is not complete"
                if problem is None:
                    complete.setdefault(p, {})[seed] = folder
                elif problem != "no folder":
                    unusable[str(folder)] = problem
        found[arm] = ArmAdapters(complete, [p for p in personas if p not in complete], unusable)
    return found


def set_aside(availability, unusable):
    """Drop every adapter of {folder: reason} from the arms that hold it, as unusable for that reason."""
    for found in availability.values():
        for persona in list(found.found):
            for seed, folder in list(found.found[persona].items()):
                if str(folder) in unusable:
                    found.drop(persona, seed, unusable[str(folder)])


@dataclass
class ModelGroup:
    """One loaded model, the arms it serves and, per adapter arm, each persona's adapter name per seed.

    `serve(personas)` puts the adapters of a group of personas on the model (a LoRA group's AdapterStore,
    a prefix group's PEFT model), so what a call costs and what the model holds depend on that group, not on
    how many adapters were trained."""
    name: str
    model: object
    tokenizer: object
    arms: list
    adapters: dict  # arm -> {persona: {seed: adapter name}}
    folders: dict = field(default_factory=dict)  # adapter name -> folder
    merged: Path = None  # the unified adapter merged into this group's base, if any
    base: object = None  # a prefix group's plain model, wrapped anew for each group of personas

    def adapters_for(self, arm, persona):
        """{seed: adapter} a row of `arm` for `persona` runs with: {None: BASE} for prompt arms, {} if none."""
        if ARMS[arm].kind == PROMPT:
            return {None: BASE}
        return self.adapters.get(arm, {}).get(persona, {})

    def serve(self, personas):
        """Hold exactly the adapters of these personas; returns {folder: reason} for those that could not be
        loaded, which are dropped from this group."""
        wanted = {name: self.folders[name] for arm in self.adapters for p in personas
                  for name in self.adapters[arm].get(p, {}).values()}
        if self.base is None:
            problems = store_of(self.model).load(wanted) if store_of(self.model) is not None else {}
        else:
            problems = {name: adapter_problem(folder, self.base) for name, folder in wanted.items()}
            problems = {name: reason for name, reason in problems.items() if reason}
            self.model = attach_adapters(self.base, {n: f for n, f in wanted.items() if n not in problems})
        for by_persona in self.adapters.values():
            for by_seed in by_persona.values():
                for seed in [s for s, name in by_seed.items() if name in problems]:
                    del by_seed[seed]
        return {str(self.folders[name]): reason for name, reason in problems.items()}


def load_model_groups(cfg, arms, availability, personas):
    """The ModelGroups serving `arms` to `personas` (availability: find_adapters' result). Adapters are put on
    a model only by ModelGroup.serve; a group whose unified adapter does not fit drops its adapters as unusable."""
    model_cfg = cfg.model

    def group(name, group_arms, on_unified=None, seed=None):
        """A model for these arms; with `on_unified`, that arm's adapter of `seed` merged in and only that seed's
        adapters."""
        model, tokenizer, _ = load_model_and_tokenizer(model_cfg.name, model_cfg.device, model_cfg.dtype)
        unified = arm_folder(cfg.adapters, on_unified, seed=seed) if on_unified else None
        if unified is not None:
            problem = adapter_problem(unified, model)
            if problem:
                for arm in group_arms:
                    for p in list(availability[arm].found):
                        if seed in availability[arm].found[p]:
                            availability[arm].drop(p, seed, f"its unified adapter {unified}: {problem}")
                return None
            model = merge_unified(model, unified)
        names = {arm: {p: {s: ARMS[arm].adapter_name(p, s) for s in availability[arm].found.get(p, {})
                           if seed is None or s == seed} for p in personas}
                 for arm in group_arms if arm in availability}
        folders = {names[arm][p][s]: availability[arm].found[p][s] for arm in names for p in names[arm]
                   for s in names[arm][p]}
        if any(ARMS[arm].kind == PREFIX for arm in group_arms):
            return ModelGroup(name, model, tokenizer, group_arms, names, folders, unified, base=model)
        if folders:
            AdapterStore.for_folders(model, set(folders.values()))
        return ModelGroup(name, model, tokenizer, group_arms, names, folders, unified)

    groups = []
    kinds = {a: ARMS[a] for a in arms}
    shared = [a for a, arm in kinds.items() if arm.kind == PROMPT or
              (arm.kind == LORA and not arm.on_unified and availability[a].found)]
    if shared:
        groups.append(group("shared", shared))
    for base in dict.fromkeys(arm.on_unified for arm in kinds.values() if arm.on_unified):
        on_base = [a for a, arm in kinds.items() if arm.on_unified == base]
        for seed in sorted({s for a in on_base for s in availability[a].seeds()}):
            groups.append(group(f"on_unified_s{seed}", on_base, base, seed))
    prefix = [a for a, arm in kinds.items() if arm.kind == PREFIX and availability[a].found]
    if prefix:  # PEFT does not hold prefix and LoRA adapters in one model: a copy of the base of their own
        groups.append(group("prefix", prefix))
    return [g for g in groups if g is not None]


@dataclass(frozen=True)
class GenerationRow:
    """One reply to generate: which arm, which turn (an index into the split's turns), which adapter and seed."""
    arm: str
    turn: int
    adapter: str
    seed: int = None


def generation_rows(group, arms, turns):
    rows = []
    for arm in arms:
        for k, turn in enumerate(turns):
            for seed, adapter in group.adapters_for(arm, turn["persona_id"]).items():
                rows.append(GenerationRow(arm, k, adapter, seed))
    return rows


def generate_rows(group, rows, turns, dialogs, cfg, retriever, split, store):
    """Replies for the rows: each arm's prompts, then the stored replies whose fingerprint matches,
    and one generation pass mixing adapters for the rest (appended to the store as they finish)."""
    rows_by_prompt = {}  # {prompt settings: {turn: rows}}: arms and seeds with the same settings share a rendering
    for i, r in enumerate(rows):
        rows_by_prompt.setdefault(arm_prompt(r.arm, cfg.prompt), {}).setdefault(r.turn, []).append(i)
    prompts = [None] * len(rows)
    for prompt_cfg, rows_of_turn in rows_by_prompt.items():
        rendered = build_prompts(group.tokenizer, dialogs, [turns[k] for k in rows_of_turn], prompt_cfg, retriever)
        for prompt, picked in zip(rendered, rows_of_turn.values()):
            for i in picked:
                prompts[i] = prompt
    names = [r.adapter for r in rows] if routes_adapters(group.model) else None
    merged = adapter_hash(group.merged) if group.merged else ""
    hashes = [merged + adapter_hash(group.folders.get(r.adapter)) for r in rows]
    keys = [{"split": split, "arm": r.arm, "seed": r.seed, "persona_id": turns[r.turn]["persona_id"],
             "dialog_index": turns[r.turn]["dialog_index"], "turn_index": turns[r.turn]["turn_index"]} for r in rows]
    chains = [(r.arm, r.seed, turns[r.turn]["dialog_index"]) for r in rows]  # a dialogue's turns share one cache
    return generate_or_reuse(group.model, group.tokenizer, prompts, cfg.generation, model_identity(cfg.model.name),
                             keys, store,
                             adapter_names=names, adapter_hashes=hashes, chain_keys=chains, desc=f"{split} {group.name}")


def best_on_val(val_records, test_records, metric, arms):
    """Per persona, the arm with the best val score (ties: the earlier arm), and its test records.

    A persona whose val split defines no score (e.g. no routine setting is ever open there) gets the
    arm with the best mean val score over personas, so no persona drops out of the arm."""
    chosen, scores = {}, {}
    for arm in arms:
        for persona, m in aggregate_per_persona(val_records.get(arm, [])).items():
            score = m.get(metric)
            if score is None:
                continue
            scores.setdefault(arm, []).append(score)
            if persona not in chosen or score > chosen[persona][1]:
                chosen[persona] = (arm, score)
    if scores:
        overall = max(scores, key=lambda arm: sum(scores[arm]) / len(scores[arm]))
        tested = {r["persona_id"] for arm in arms for r in test_records.get(arm, [])}
        chosen.update({persona: (overall, None) for persona in tested - set(chosen)})
    choice = {p: arm for p, (arm, _) in sorted(chosen.items())}
    records = [r for p, arm in choice.items() for r in test_records[arm] if r["persona_id"] == p]
    return choice, records
