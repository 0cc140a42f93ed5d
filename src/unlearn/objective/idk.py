"""Fine-tuning the forget prompts toward refusals (the "I don't know" / SFT baseline)."""

import torch

from unlearn.objective.context import StepContext
from unlearn.objective.registry import register_term


@register_term("idk", segments=("refusal",))
def idk(ctx: StepContext) -> torch.Tensor:
    """NLL of a refusal given each forget prompt (supervised fine-tuning on refusals).

    L_idk = (1/B) sum_i (1/|r_i|) sum_t -log p(r_i,t | x_i, r_i,<t)

    with x_i a forget prompt and r_i a refusal reply drawn for it each step (data.refusals, or a
    built-in list). The model learns to decline rather than to unlearn: the baseline the paper calls
    "fine-tuned on refusals" (Yao, Xu, Liu, NeurIPS 2024, table 2), and TOFU's "IDK" fine-tuning
    (Maini et al., "TOFU: A Task of Fictitious Unlearning for LLMs", 2024).
    """
    return ctx.seq_nll("refusal").mean()
