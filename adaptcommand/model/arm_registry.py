"""The study's arms, one record each: ask an arm what it is, not which tuple it is in.

An arm is a reference policy (a reply with no model), a prompt arm (the base model with a prompt), or an
adapter arm (LoRA or prefix tuning), unified (one adapter over every persona's dialogues) or per user, and
trained either on the base model or on the unified LoRA adapter of its seed, merged in. Adding an arm is one
record here; an adapter arm also names the training scope that writes it (train_lora_per_user.py --scope),
and its adapters live under the config's `adapters.<name>`.
"""

import dataclasses
from dataclasses import dataclass

POLICY, PROMPT, LORA, PREFIX = "policy", "prompt", "lora", "prefix"


@dataclass(frozen=True)
class Arm:
    name: str
    kind: str                # POLICY, PROMPT, LORA or PREFIX
    note: str = ""           # what the arm is, for the printed tables
    scope: str = None        # the training scope that writes its adapters (adapter arms)
    unified: bool = False    # one adapter over every persona's dialogues, not one per persona
    on_unified: str = None   # the unified LoRA arm whose adapter of the same seed it trains on, merged in
    peft_name: str = None    # its PEFT adapter names' stem: no dots, never "lora_" (PEFT would re-initialise it)
    prompt: tuple = ()       # (prompt key, value) switched on over the config's prompt

    @property
    def has_adapters(self):
        return self.kind in (LORA, PREFIX)

    def adapter_name(self, persona=None, seed=0):
        """The PEFT adapter name of one persona's (a unified arm: the) adapter of one seed."""
        return f"{self.peft_name}_s{seed}" if self.unified else f"{self.peft_name}_{persona}_s{seed}"


def _policy(name, note):
    return Arm(name, POLICY, note)


REGISTRY = (
    _policy("silent", "replies \"Okay.\" (no model): what saying nothing scores"),
    _policy("echo", "repeats the user's last message (no model): what copying the user scores"),
    _policy("echo_assistant", "repeats the assistant's last message (no model): what copying the dialogue's own "
                              "earlier turns scores"),
    _policy("rotate_usual", "states the population's 3 most common values for the devices talked about, a "
                            "different one each turn (no model): what hedging scores"),
    _policy("oracle", "states the applied routine's settings for the devices talked about (no model, reads the "
                      "reference): what perfect memory scores"),
    _policy("user_usual", "states the values this user's train-session routines set most often, for the devices "
                          "talked about (no model, no context): what remembering the user's habits scores"),
    _policy("everyone_usual", "the same with every user's train sessions pooled: what the population's habits score"),
    Arm("baseline", PROMPT, "the base model with the system prompt"),
    Arm("character", PROMPT, "the base model told the user's character description", prompt=(("include_character", True),)),
    Arm("retrieval", PROMPT, "the base model shown the user's most similar past dialogues",
        prompt=(("retrieval", True),)),
    Arm("lora_all", LORA, "one LoRA adapter trained on every persona's dialogues", scope="all", unified=True,
        peft_name="unified"),
    Arm("lora_per_user", LORA, "one LoRA adapter per persona, on the base model", scope="per_user", peft_name="user"),
    Arm("lora_per_user_on_all", LORA, "one LoRA adapter per persona, trained on the unified adapter merged in",
        scope="per_user_on_all", on_unified="lora_all", peft_name="onall"),
    # the more-training comparator: the unified adapter trained further on everyone's dialogues with the
    # per-user-on-unified recipe, so that arm's gain can be split into more training and per-user memory
    Arm("lora_all_on_all", LORA, "the unified adapter trained as much further on every persona's dialogues",
        scope="all_on_all", unified=True, on_unified="lora_all", peft_name="allonall"),
    Arm("prefix_all", PREFIX, "one prefix-tuning adapter trained on every persona's dialogues", scope="prefix_all",
        unified=True, peft_name="prefixall"),
    Arm("prefix_per_user", PREFIX, "one prefix-tuning adapter per persona", scope="prefix_per_user",
        peft_name="prefix"),
)
ARMS = {arm.name: arm for arm in REGISTRY}
SCOPES = {arm.scope: arm for arm in REGISTRY if arm.scope}  # training scope -> the arm it writes


def arm_prompt(arm, prompt_cfg):
    """The prompt settings of an arm: the config's, with the arm's own switches on."""
    return dataclasses.replace(prompt_cfg, **dict(ARMS[arm].prompt if arm in ARMS else ()))


BASELINE = ARMS["baseline"]    # the prompt-only baseline every arm is measured against
UNIFIED = ARMS["lora_all"]     # the unified LoRA adapter, the per-user arms' reference
COMPARATOR = ARMS["lora_all_on_all"]  # the unified adapter trained as much further: more training, no memory
# the per-persona LoRA arms, on the base model or on the unified adapter
PER_USER_LORA = tuple(arm.name for arm in REGISTRY if arm.kind == LORA and not arm.unified)
REFERENCES = (BASELINE.name, UNIFIED.name, "retrieval")  # each model arm is compared with each of these


def is_policy(name):
    """Whether `name` is a reference policy (best_on_val, a choice among model arms, is not in the registry)."""
    return name in ARMS and ARMS[name].kind == POLICY


def comparator_pairs(names):
    """The comparator's own family: each per-user arm trained on the comparator's unified base against the
    comparator (per-user memory, with the training held equal), and the comparator against that base (what
    more training alone gives). Empty without the comparator."""
    if COMPARATOR.name not in names:
        return []
    pairs = [(name, COMPARATOR.name) for name in names
             if name in ARMS and ARMS[name].on_unified == COMPARATOR.on_unified and not ARMS[name].unified]
    return pairs + ([(COMPARATOR.name, COMPARATOR.on_unified)] if COMPARATOR.on_unified in names else [])
