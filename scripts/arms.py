"""Which model serves each arm, and the generation rows of an evaluation.

Prompt arms (baseline, character, retrieval) run on the base model. Adapter arms run through
PEFT adapters loaded into one model: the unified adapter and every per-user adapter, of every
training seed found, sit side by side and each row of a batch names its own (`adapter_names`).
Per-user adapters trained on top of the unified one need the unified adapter of their seed merged
into the base first, so they get another copy of the model per seed: a `ModelGroup` is one loaded
model and the arms it serves. Reference policies (echo, oracle, silent) need no model at all.
"""

from dataclasses import dataclass, field
from pathlib import Path

from scripts.adapters import arm_folder, attach_adapters, is_complete, merge_unified, seeds_found
from scripts.config import ADAPTER_ARMS, PROMPT_ARMS, arm_prompt
from scripts.evaluation import build_prompts
from scripts.generation import generate_texts
from scripts.modeling import load_model_and_tokenizer

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


def adapter_name(arm, persona=None, seed=0):
    """PEFT adapter names: no dots, and never containing 'lora_' (PEFT would re-initialise them)."""
    return {"lora_all": "unified", "lora_per_user": f"user_{persona}", "lora_per_user_on_all": f"onall_{persona}"}[arm] \
        + f"_s{seed}"


@dataclass
class ArmAdapters:
    """An adapter arm's folders: {persona: {seed: folder}} found complete, and the personas without any."""
    found: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)

    def seeds(self):
        return sorted({s for by_seed in self.found.values() for s in by_seed})


def find_adapters(cfg, arms, personas):
    """{adapter arm: ArmAdapters} for the arms asked for, over every seed folder found under each arm's root.

    A per-user-on-unified adapter of seed s counts only beside a complete unified adapter of seed s.
    """
    adapters = cfg["adapters"]
    found = {}
    for arm in arms:
        if arm not in ADAPTER_ARMS:
            continue
        complete = {}
        for seed in seeds_found(adapters[arm]):
            if arm == "lora_per_user_on_all" and not is_complete(arm_folder(adapters, "lora_all", seed=seed)):
                continue
            for p in personas:
                folder = Path(arm_folder(adapters, arm, p, seed))
                if is_complete(folder):
                    complete.setdefault(p, {})[seed] = folder
        found[arm] = ArmAdapters(complete, [p for p in personas if p not in complete])
    return found


@dataclass
class ModelGroup:
    """One loaded model, the arms it serves and, per adapter arm, each persona's adapter name per seed."""
    name: str
    model: object
    tokenizer: object
    arms: list
    adapters: dict  # arm -> {persona: {seed: adapter name}}

    def adapters_for(self, arm, persona):
        """{seed: adapter} a row of `arm` for `persona` runs with: {None: BASE} for prompt arms, {} if none."""
        if arm in PROMPT_ARMS:
            return {None: BASE}
        return self.adapters.get(arm, {}).get(persona, {})


def load_model_groups(cfg, arms, availability):
    """The ModelGroups serving `arms` (availability: find_adapters' result, for the personas of this run)."""
    model_cfg = cfg["model"]

    def group(name, group_arms, seed=None):
        """A model for these arms; with `seed`, the unified adapter of that seed merged in and only that seed's adapters."""
        names = {arm: {p: {s: adapter_name(arm, p, s) for s in by_seed if seed is None or s == seed}
                       for p, by_seed in availability[arm].found.items()}
                 for arm in group_arms if arm in availability}
        folders = {names[arm][p][s]: availability[arm].found[p][s] for arm in names for p in names[arm]
                   for s in names[arm][p]}
        model, tokenizer, _ = load_model_and_tokenizer(model_cfg["name"], model_cfg["device"], model_cfg["dtype"])
        if seed is not None:
            model = merge_unified(model, arm_folder(cfg["adapters"], "lora_all", seed=seed))
        return ModelGroup(name, attach_adapters(model, folders), tokenizer, group_arms, names)

    groups = []
    shared = [a for a in arms if a in PROMPT_ARMS or (a in ("lora_all", "lora_per_user") and availability[a].found)]
    if shared:
        groups.append(group("shared", shared))
    if "lora_per_user_on_all" in arms:
        for seed in availability["lora_per_user_on_all"].seeds():
            groups.append(group(f"on_unified_s{seed}", ["lora_per_user_on_all"], seed))
    return groups


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


def generate_rows(group, rows, turns, dialogs, cfg, retriever, desc):
    """Replies for the rows: each arm's prompts, then one generation pass mixing adapters."""
    prompts = [None] * len(rows)
    for arm in dict.fromkeys(r.arm for r in rows):
        picked = [i for i, r in enumerate(rows) if r.arm == arm]
        arm_prompts = build_prompts(group.tokenizer, dialogs, [turns[rows[i].turn] for i in picked],
                                    arm_prompt(arm, cfg["prompt"]), retriever)
        for i, prompt in zip(picked, arm_prompts):
            prompts[i] = prompt
    names = [r.adapter for r in rows] if hasattr(group.model, "peft_config") else None
    return generate_texts(group.model, group.tokenizer, prompts, cfg["generation"], adapter_names=names, desc=desc)
