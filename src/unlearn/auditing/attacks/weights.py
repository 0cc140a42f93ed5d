"""Weight attacks: the same questions, asked of a model whose weights were quantised.

    quantize      round-to-nearest per-group quantisation of every Linear layer in the transformer
                  blocks, at each width of audit.quant_bits, simulated in float (any device). Zhang
                  et al. (ICLR 2025) found that 4-bit quantisation brought "forgotten" knowledge
                  back: unlearning with a small learning rate moves weights by less than half a
                  quantisation step, the quantiser rounds the update away, and the quantised
                  unlearned model is the quantised original.
    bitsandbytes  the model reloaded with real 4-bit (NF4) and 8-bit (LLM.int8) loading: what a user
                  of bitsandbytes would run. Needs a CUDA GPU and the bitsandbytes package.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Optional

from unlearn.auditing.context import AuditContext
from unlearn.auditing.quantize import bitsandbytes_available, load_bitsandbytes, quantizable_layers, quantize_model
from unlearn.auditing.registry import Trial, register_attack
from unlearn.evaluate.run import free_model

SOURCE = "Zhang et al., ICLR 2025, 'Catastrophic failure of LLM unlearning via quantization'"


@register_attack("quantize", kind="weights", source=SOURCE,
                 description="round-to-nearest per-group weight quantisation (each of audit.quant_bits)",
                 check=quantizable_layers)
def quantize(ctx: AuditContext, model: Any, label: str) -> list[Trial]:
    a = ctx.cfg.audit
    trials = []
    for bits in a.quant_bits:
        q = copy.deepcopy(model)
        n = quantize_model(q, bits, a.quant_group_size)
        trial = ctx.measure(q, label, [ctx.plain(name=f"{bits}-bit")], transform=f"rtn:{bits}:{a.quant_group_size}")[0]
        trial.info = {"bits": bits, "group_size": a.quant_group_size, "layers": n, "method": "round-to-nearest"}
        trials.append(trial)
        free_model(q)
    return trials


def _bnb_applies(ctx: AuditContext) -> Optional[str]:
    if ctx.device != "cuda":
        return "real 4-/8-bit loading needs a CUDA GPU (the quantize attack simulates it)"
    if not bitsandbytes_available():
        return "the bitsandbytes package is not installed (pip install bitsandbytes)"
    if (Path(ctx.paths["unlearned"]) / "adapter_config.json").exists():
        return ("the unlearned model is a LoRA adapter: bitsandbytes loads full model folders "
                "(model.merge: true saves one); the quantize attack covers it")
    return None


@register_attack("bitsandbytes", kind="weights", source=SOURCE,
                 description="the model reloaded with bitsandbytes 8-bit and 4-bit (NF4) weights",
                 applies=_bnb_applies)
def bitsandbytes(ctx: AuditContext, model: Any, label: str) -> list[Trial]:
    trials = []
    for bits in (8, 4):
        q = load_bitsandbytes(ctx.paths[label], bits, ctx.tokenizer)
        trial = ctx.measure(q, label, [ctx.plain(name=f"bnb {bits}-bit")], transform=f"bnb:{bits}")[0]
        trial.info = {"bits": bits, "method": "bitsandbytes " + ("LLM.int8" if bits == 8 else "NF4")}
        trials.append(trial)
        free_model(q)
    return trials
