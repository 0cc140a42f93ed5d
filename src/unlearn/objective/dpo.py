"""DPO with a refusal as the preferred answer and the forget response as the rejected one."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn.config import check, setting
from unlearn.objective.context import StepContext
from unlearn.objective.registry import register_term


@dataclass
class DpoParams:
    """Parameters of the dpo term."""

    beta: float = setting(
        0.1,
        help="Inverse temperature of the preference: how far from the original model the log-ratio "
        "margin between the refusal and the forget response may grow before the loss saturates.",
    )

    def __post_init__(self) -> None:
        check(self.beta > 0, "beta", f"must be > 0, got {self.beta}")


@register_term("dpo", segments=("forget", "refusal"), reference=True, params=DpoParams)
def dpo(ctx: StepContext, beta: float) -> torch.Tensor:
    """DPO with a refusal as the preferred answer and the forget response as the rejected one.

    L_DPO = -(1/B) sum_i log sigmoid(beta [(log pi(r_i|x_i) - log pi_ref(r_i|x_i))
                                          - (log pi(y_i|x_i) - log pi_ref(y_i|x_i))])

    x_i a forget prompt, y_i its forget response (rejected), r_i a refusal drawn for it (chosen);
    log pi are summed sequence log-likelihoods, pi_ref the frozen original model. Refusal row i
    belongs to forget row i of the batch.
    Rafailov et al., "Direct Preference Optimization: Your Language Model is Secretly a Reward
    Model", NeurIPS 2023, eq. 7; used for unlearning with refusals as in Maini et al., TOFU (2024).
    """
    chosen = ctx.seq_logp("refusal") - ctx.reference_seq_logp("refusal")
    rejected = ctx.seq_logp("forget") - ctx.reference_seq_logp("forget")
    return -F.logsigmoid(beta * (chosen - rejected)).mean()
