"""SimNPO: reference-free, length-normalised NPO on the forget responses (Fan et al. 2024)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn.config import check, setting
from unlearn.objective.context import StepContext
from unlearn.objective.registry import register_term


@dataclass
class SimNpoParams:
    """Parameters of the simnpo term."""

    beta: float = setting(
        2.5, help="Inverse temperature: the push fades once the forget NLL exceeds delta by a few / beta."
    )
    delta: float = setting(
        0.0,
        help="Margin in nats per token (the paper's gamma = beta x delta): keeps pushing until the mean "
        "forget NLL exceeds it. Raise it on data the model was not fine-tuned on (NLL of 2-3 nats).",
    )

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")


@register_term("simnpo", segments=("forget",), params=SimNpoParams)
def simnpo(ctx: StepContext, beta: float, delta: float) -> torch.Tensor:
    """SimNPO: reference-free, length-normalised NPO on the forget responses (Fan et al. 2024).

    L_SimNPO = -(2/beta) (1/B) sum_i log sigmoid(beta (NLL_i - delta)),
    NLL_i = -(1/|y_i|) log pi(y_i|x_i)   (per-token mean NLL of the forget response)

    NPO without the reference model and with the log-likelihood divided by the response length,
    so long responses do not dominate. The margin delta (in nats per token) keeps pushing until the
    mean NLL exceeds it; the paper writes it as gamma = beta * delta:
    -(2/beta) log sigmoid(-(beta/|y|) log pi(y|x) - gamma).
    Its gradient on NLL_i is -2 sigmoid(-beta (NLL_i - delta)): strong while NLL_i < delta, fading
    once NLL_i exceeds delta by a few / beta. With delta = 0 it suits models fine-tuned on the forget
    data (NLL near 0); on data with an NLL of 2-3 nats it barely acts unless delta is raised.
    Fan, Liu, Lin, Jia, Zhang, Mei, Liu, "Simplicity Prevails: Rethinking Negative Preference
    Optimization for LLM Unlearning", arXiv 2410.07163 (2024), eq. 4.
    """
    nll = ctx.seq_nll("forget")
    return -(2.0 / beta) * F.logsigmoid(beta * (nll - delta)).mean()
