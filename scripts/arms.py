"""Which model serves each arm, and the generation rows of an evaluation.

Prompt arms (baseline, character, retrieval) run on the base model. Adapter arms run through
PEFT adapters loaded into one model: the unified adapter and every per-user adapter sit side by
side and each row of a batch names its own (`adapter_names`). Per-user adapters trained on top of
the unified one need the unified adapter merged into the base first, so they get a second copy of
the model: a `ModelGroup` is one loaded model and the arms it serves.
"""

from dataclasses import dataclass, field
from pathlib import Path

from scripts.adapters import arm_folder, attach_adapters, is_complete, merge_unified
from scripts.config import ADAPTER_ARMS, PROMPT_ARMS, arm_prompt
from scripts.evaluation import build_prompts
from scripts.generation import generate_texts
from scripts.modeling import load_model_and_tokenizer

BASE = "__base__"  # PEFT's name for "no adapter" in a mixed batch


def adapter_name(arm, persona=None):
    """PEFT adapter names: no dots, and never containing 'lora_' (PEFT would re-initialise them)."""
    return {"lora_all": "unified", "lora_per_user": f"user_{persona}", "lora_per_user_on_all": f"onall_{persona}"}[arm]


@dataclass
class ArmAdapters:
    """An adapter arm's folders: {persona: folder} found complete, and the personas without one."""
    found: dict = field(default_factory=dict)
    missing: list = field(default_factory=list)


def find_adapters(cfg, arms, personas):
    """{adapter arm: ArmAdapters} for the arms asked for; per-user-on-unified needs the unified adapter too."""
    adapters = cfg["adapters"]
    found = {}
    for arm in arms:
        if arm not in ADAPTER_ARMS:
            continue
        folders = {p: Path(arm_folder(adapters, arm, p)) for p in personas}
        usable = arm != "lora_per_user_on_all" or is_complete(adapters["lora_all"])
        complete = {p: f for p, f in folders.items() if usable and is_complete(f)}
        found[arm] = ArmAdapters(complete, [p for p in personas if p not in complete])
    return found


@dataclass
class ModelGroup:
    """One loaded model, the arms it serves and, per adapter arm, each persona's adapter name."""
    name: str
    model: object
    tokenizer: object
    arms: list
    adapters: dict  # arm -> {persona: adapter name}

    def adapter_for(self, arm, persona):
        """The adapter a row of `arm` for `persona` runs with: BASE for prompt arms, None if it has none."""
        if arm in PROMPT_ARMS:
            return BASE
        return self.adapters.get(arm, {}).get(persona)


def load_model_groups(cfg, arms, availability):
    """The ModelGroups serving `arms` (availability: find_adapters' result, for the personas of this run)."""
    model_cfg = cfg["model"]

    def group(name, group_arms, merge=None):
        names = {arm: {p: adapter_name(arm, p) for p in availability[arm].found} for arm in group_arms
                 if arm in availability}
        folders = {names[arm][p]: f for arm in names for p, f in availability[arm].found.items()}
        model, tokenizer, _ = load_model_and_tokenizer(model_cfg["name"], model_cfg["device"], model_cfg["dtype"])
        if merge is not None:
            model = merge_unified(model, merge)
        return ModelGroup(name, attach_adapters(model, folders), tokenizer, group_arms, names)

    groups = []
    shared = [a for a in arms if a in PROMPT_ARMS or (a in ("lora_all", "lora_per_user") and availability[a].found)]
    if shared:
        groups.append(group("shared", shared))
    if "lora_per_user_on_all" in arms and availability["lora_per_user_on_all"].found:
        groups.append(group("on_unified", ["lora_per_user_on_all"], merge=cfg["adapters"]["lora_all"]))
    return groups


@dataclass(frozen=True)
class GenerationRow:
    """One reply to generate: which arm, which turn (an index into the split's turns), which adapter."""
    arm: str
    turn: int
    adapter: str


def generation_rows(group, arms, turns):
    rows = []
    for arm in arms:
        for k, turn in enumerate(turns):
            adapter = group.adapter_for(arm, turn["persona_id"])
            if adapter is not None:
                rows.append(GenerationRow(arm, k, adapter))
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
