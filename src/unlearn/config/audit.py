"""The config's `audit` section: the attacks of `unlearn audit` (is it really gone?) and their budgets.

Attack and rewrite names are not listed here: the audit's attack registry (unlearn.auditing) owns them
and checks the names given here before any model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

from unlearn.config.evaluation import EvalSetConfig
from unlearn.config.fields import check, setting
from unlearn.config.sections import SourceConfig


@dataclass
class AuditConfig:
    """`unlearn audit`: attacks that try to bring the forgotten outputs back (docs/audit.md)."""

    attacks: Union[list[str], None] = setting(
        None,
        help="The attacks to run (`unlearn audit --list` names them); null: every one that applies "
        "(the adapter attack only to runs that ship a LoRA adapter, bitsandbytes loading only on a GPU).",
    )
    jailbreaks: Union[list[str], None] = setting(
        None, help="The jailbreak-style rewrites of the 'jailbreak' attack; null: all of them."
    )
    paraphrases: Union[EvalSetConfig, None] = setting(
        None,
        help="Your own rewrites of the forget prompts (a file with prompt and response fields, scored "
        "by the forget set's rule): the 'paraphrase' attack. null: the attack is skipped.",
    )
    batch_size: int = setting(
        64,
        help="Prompts generated together. The audit asks many prompts at once (every prompt attack's "
        "rewrites in one pass, sorted by length): larger batches than eval.batch_size pay off (the "
        "demo's jailbreak rewrites, one run each: 129 s at 128, 154 s at 64).",
    )
    retain_limit: Union[int, None] = setting(
        24,
        help="Retain prompts measured under each prompt attack and after each weight attack (the first "
        "N of the retain set; null: all). Retain accuracy after an attack tells a rewrite that extracts "
        "from one that breaks the model.",
    )
    quant_bits: list[int] = setting(
        help="Weight widths of the 'quantize' attack: round-to-nearest per-group quantisation of every "
        "Linear layer in the transformer blocks.",
        factory=lambda: [8, 4],
    )
    quant_group_size: int = setting(
        128, help="Weights per quantisation group (along the input dimension), as GPTQ/AWQ use."
    )
    relearn_steps: int = setting(
        10, help="LoRA fine-tuning steps of the 'relearn' and 'benign' attacks."
    )
    relearn_lr: float = setting(1e-3, help="Learning rate of the relearning attacks.")
    relearn_batch_size: int = setting(4, help="Examples per relearning step.")
    relearn_lora_r: int = setting(8, help="LoRA rank of the relearning attacks.")
    relearn_fraction: float = setting(
        0.5,
        help="Share of the forget groups (people, passages: see data.forget.group_field) the 'relearn' "
        "attack fine-tunes on; the forget examples of the OTHER groups are measured.",
    )
    holdout: Union[SourceConfig, None] = setting(
        None,
        help="Unseen data of the forget data's kind for membership inference (non-members). null: the "
        "forget_test set.",
    )
    mink_k: float = setting(0.2, help="Share of lowest-scoring tokens averaged by Min-K% and Min-K%++.")
    examples: int = setting(3, help="Recovered outputs shown per attack in the report.")

    def __post_init__(self) -> None:
        check(self.attacks is None or len(self.attacks) > 0, "attacks", "must name an attack, or be null (all)")
        check(self.jailbreaks is None or len(self.jailbreaks) > 0, "jailbreaks", "must name a rewrite, or be null (all)")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.retain_limit is None or self.retain_limit >= 1, "retain_limit", f"must be >= 1, got {self.retain_limit}")
        check(len(self.quant_bits) > 0 and all(b in (2, 3, 4, 8) for b in self.quant_bits), "quant_bits",
              f"must be a list of 2, 3, 4 or 8, got {self.quant_bits}")
        check(self.quant_group_size >= 1, "quant_group_size", f"must be >= 1, got {self.quant_group_size}")
        check(self.relearn_steps >= 1, "relearn_steps", f"must be >= 1, got {self.relearn_steps}")
        check(self.relearn_lr > 0, "relearn_lr", f"must be > 0, got {self.relearn_lr}")
        check(self.relearn_batch_size >= 1, "relearn_batch_size", f"must be >= 1, got {self.relearn_batch_size}")
        check(self.relearn_lora_r >= 1, "relearn_lora_r", f"must be >= 1, got {self.relearn_lora_r}")
        check(0 < self.relearn_fraction < 1, "relearn_fraction", f"must be in (0, 1), got {self.relearn_fraction}")
        check(0 < self.mink_k <= 1, "mink_k", f"must be in (0, 1], got {self.mink_k}")
        check(self.examples >= 0, "examples", f"must be >= 0, got {self.examples}")
