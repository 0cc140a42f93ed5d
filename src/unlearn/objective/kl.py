"""Forward KL to the original model on normal data (the paper's L_nor)."""

from dataclasses import dataclass
from typing import Literal

import torch

from unlearn.config import setting
from unlearn.objective.context import StepContext
from unlearn.objective.registry import register_term


@dataclass
class KlParams:
    """Parameters of the kl term."""

    reduction: Literal["mean", "sum"] = setting(
        "mean",
        help="How a retain sequence's per-token KLs make its value: mean (each sequence weighs the "
        "same, whatever its length) or sum (the paper's L_nor: long responses weigh more, and the "
        "term's scale grows with the response length).",
    )


@register_term("kl", segments=("retain",), reference=True, params=KlParams)
def kl(ctx: StepContext, reduction: str) -> torch.Tensor:
    """Forward KL(original || current) on retain response tokens (the paper's L_nor).

    mean: L_nor = (1/B) sum_i (1/|y_i|) sum_t KL(p_ref(.|x_i,y_<t) || p_theta(.|x_i,y_<t))
    sum:  L_nor = (1/B) sum_i           sum_t KL(p_ref(.|x_i,y_<t) || p_theta(.|x_i,y_<t))   (the paper)

    KL(p || q) = sum_v p(v) (log p(v) - log q(v)), with p the frozen original (reference) model and
    q the model being trained, at every response position of the retain (normal) examples; per
    sequence (mean or sum over its response tokens), then the mean over the batch. Both sides are
    log-softmax in fp32, so it is finite in fp16/bf16; the context computes them in chunks of
    positions (StepContext.forward_kl).
    Yao, Xu, Liu, "Large Language Model Unlearning", NeurIPS 2024, L_nor.
    """
    per_token = ctx.forward_kl("retain")
    per_seq = ctx.seq_sum(per_token, "retain") if reduction == "sum" else ctx.seq_mean(per_token, "retain")
    return per_seq.mean()
