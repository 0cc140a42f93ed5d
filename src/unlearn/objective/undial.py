"""UNDIAL: self-distillation towards the original model with the forget token's logit lowered (Dong et al. 2025)."""

from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from unlearn.config import check, setting
from unlearn.models.forward import per_position
from unlearn.objective.context import StepContext
from unlearn.objective.presets import register_preset
from unlearn.objective.registry import register_term


@dataclass
class UndialParams:
    """Parameters of the undial term."""

    beta: float = setting(
        10.0,
        help="How far the forget token's logit is lowered in the original model's logits before they "
        "become the target distribution (open-unlearning's notes suggest 3, 10 or 30).",
    )

    def __post_init__(self) -> None:
        check(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")


def undial_of(logits: torch.Tensor, reference_logits: torch.Tensor, targets: torch.Tensor, beta: float) -> torch.Tensor:
    """Cross-entropy of softmax(logits) against softmax(reference_logits - beta onehot(target)),
    fp32, at each position: [positions]."""
    adjusted = reference_logits.float().scatter_add(
        1, targets.unsqueeze(1), torch.full((targets.shape[0], 1), -beta, device=targets.device)
    )
    target = F.softmax(adjusted, dim=-1)
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1)


@register_term("undial", segments=("forget",), reference=True, params=UndialParams)
def undial(ctx: StepContext, beta: float) -> torch.Tensor:
    """UNDIAL: distil the original model with the forget token's logit lowered by beta (Dong et al. 2025).

    L_UNDIAL = (1/B) sum_i (1/|y_i|) sum_t CE(q_t, p_theta(. | x_i, y_i,<t)),
    q_t = softmax(z_ref(x_i, y_i,<t) - beta onehot(y_i,t)),   CE(q, p) = -sum_v q(v) log p(v)

    z_ref are the frozen original model's logits. The target is fixed (it never moves with the
    model), so the loss is bounded below and training converges instead of running away as gradient
    ascent does: the model learns the original distribution with only the forget token made
    e^beta times less likely. Its gradient on the logits is p_theta - q: at the start, where
    p_theta = p_ref, it lowers the forget token's logit and raises the others in proportion.
    Dong, Lin, Belkin, Huerta, Vulic, "UNDIAL: Self-Distillation with Adjusted Logits for Robust
    Unlearning in Large Language Models", NAACL 2025 (arXiv 2402.10052), eq. for the adjusted
    logits. open-unlearning's compute_undial_loss (beta 10) averages over every position of the
    batch, prompt and padding included (their -100 label then lowers the logit of the vocabulary's
    100th-from-last token); we average over the forget response tokens, per sequence, then over the
    batch. Preset `undial`: the term alone, as the paper (no retain data) and open-unlearning's
    config (alpha 0) have it.
    """
    pos = ctx.span("forget")
    fn = partial(undial_of, beta=beta)
    per_token = per_position(fn, ctx.segment_logits("forget"), ctx.reference_logits("forget"), ctx.targets[pos])
    return ctx.seq_mean(per_token, "forget").mean()


register_preset("undial", {"undial": 1.0})
