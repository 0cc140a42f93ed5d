"""Negative Preference Optimization on the forget responses (Zhang et al. 2024)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn.config import check, setting
from unlearn.objective.context import StepContext
from unlearn.objective.registry import register_term


@dataclass
class NpoParams:
    """Parameters of the npo term."""

    beta: float = setting(
        0.1,
        help="Inverse temperature: how fast the per-example weight fades once the forget response's "
        "likelihood falls below the original model's. Small: close to gradient ascent.",
    )

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")


@register_term("npo", segments=("forget",), reference=True, params=NpoParams)
def npo(ctx: StepContext, beta: float) -> torch.Tensor:
    """Negative Preference Optimization on the forget responses (Zhang et al. 2024).

    L_NPO = -(2/beta) (1/B) sum_i log sigmoid(-beta (log pi(y_i|x_i) - log pi_ref(y_i|x_i)))

    with log pi(y|x) the summed log-likelihood of the whole forget response under the model being
    trained and pi_ref the frozen original. DPO with the forget response as the rejected answer and
    no chosen one: its gradient is gradient ascent's, weighted per example by
    2 pi^beta / (pi^beta + pi_ref^beta), which fades once an example is forgotten, so NPO collapses
    far more slowly than GA. As beta -> 0 it approaches GA on sequence log-likelihoods.
    Zhang, Lin, Bai, Mei, "Negative Preference Optimization: From Catastrophic Collapse to Effective
    Unlearning", COLM 2024 (arXiv 2404.05868), eq. 3.
    """
    log_ratio = ctx.seq_logp("forget") - ctx.reference_seq_logp("forget")
    return -(2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()
