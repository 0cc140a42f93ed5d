"""Weighted Gradient Ascent on the forget responses (Wang et al. 2025)."""

from dataclasses import dataclass

import torch

from unlearn.config import check, setting
from unlearn.objective.context import StepContext
from unlearn.objective.presets import register_preset
from unlearn.objective.registry import register_term


@dataclass
class WgaParams:
    """Parameters of the wga term."""

    beta: float = setting(
        1.0,
        help="Exponent of the per-token weight p(y_t)^beta: larger stops pushing sooner on tokens "
        "already made unlikely; 0 is plain gradient ascent.",
    )

    def __post_init__(self) -> None:
        check(self.beta >= 0, "beta", f"must be >= 0, got {self.beta}")


@register_term("wga", segments=("forget",), params=WgaParams)
def wga(ctx: StepContext, beta: float) -> torch.Tensor:
    """Weighted gradient ascent: GA with each forget token weighted by p(y_t)^beta (Wang et al. 2025).

    L_WGA = (1/B) sum_i (1/|y_i|) sum_t w_t log p(y_i,t | x_i, y_i,<t),   w_t = sg[p(y_i,t | ...)]^beta

    sg: no gradient through the weight. Its gradient is gradient ascent's, token by token scaled by
    the token's own probability: a token the model already finds unlikely stops being pushed, so
    the loss does not run off to -infinity as GA does. beta = 0 is GA.
    Wang, Zhou, Zhou, Shin, Han, Weinberger, "Rethinking LLM Unlearning Objectives: A Gradient
    Perspective and Go Beyond", ICLR 2025 (arXiv 2502.19301), WGA; the same as open-unlearning's
    compute_wga_loss (beta 1), except that it averages per sequence, then over the batch (open-
    unlearning: over all forget tokens of the batch at once). Preset `wga`: + nll x 1, the retain NLL
    open-unlearning's WGA config uses (gamma 1, alpha 1, retain_loss_type NLL).
    """
    logp = ctx.token_logps("forget")
    weight = logp.detach().mul(beta).exp()  # p^beta without a gradient
    return ctx.seq_mean(weight * logp, "forget").mean()


register_preset("wga", {"wga": 1.0, "nll": 1.0})
