"""Membership inference: can the model still tell the forget data from unseen data of its kind?

LOSS, zlib, Min-K% and Min-K%++ scores (unlearn.auditing.membership) of the forget set's targets
(members: trained on, then unlearned) against non-members (audit.holdout, else the forget_test set),
and the ROC AUC of each. 0.5: the model cannot tell them apart; far from 0.5 either way, it still
can (MUSE's PrivLeak reads the distance from a retrained model's AUC; without one, from 0.5).
"""

from __future__ import annotations

from typing import Any, Optional

from unlearn.auditing.context import AuditContext
from unlearn.auditing.membership import membership
from unlearn.auditing.registry import Trial, register_attack
from unlearn.evaluate.forced import set_encoder
from unlearn.evaluate.sets import EvalSet


def nonmembers(ctx: AuditContext) -> tuple[Optional[EvalSet], str]:
    """(the non-member set, what it is)."""
    if "holdout" in ctx.extra:
        return ctx.extra["holdout"], "audit.holdout"
    return ctx.sets.get("forget_test"), "forget_test"


def _applies(ctx: AuditContext) -> Optional[str]:
    f = ctx.sets.get("forget")
    if f is None or not f.has_targets:
        return "no forget set with target responses"
    other, _ = nonmembers(ctx)
    if other is None or not other.has_targets:
        return "no non-member data: set audit.holdout or give a forget_test set with responses"
    return None


@register_attack("membership", kind="membership", source="Shi et al. 2024 (Min-K%), Zhang et al. 2024 "
                 "(Min-K%++), Carlini et al. 2021 (zlib), Yeom et al. 2018 (LOSS); MUSE's PrivLeak",
                 description="LOSS, zlib, Min-K% and Min-K%++ AUC: forget targets vs unseen ones",
                 applies=_applies)
def membership_inference(ctx: AuditContext, model: Any, label: str) -> list[Trial]:
    members = ctx.sets["forget"]
    other, what = nonmembers(ctx)
    assert other is not None
    enc = set_encoder(ctx.cfg, ctx.tokenizer, members)
    res = membership(model, enc, list(zip(members.prompts, members.targets)), list(zip(other.prompts, other.targets)),
                     batch_size=ctx.cfg.eval.batch_size, k=ctx.cfg.audit.mink_k)
    return [Trial("membership", mia=res, info={"members": len(members.items), "nonmembers": len(other.items),
                                               "nonmember_set": what, "k": ctx.cfg.audit.mink_k})]
