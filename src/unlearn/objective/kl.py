"""Forward KL to the original model on normal data (the paper's L_nor)."""

import torch

from unlearn.objective.context import StepContext
from unlearn.objective.registry import register_term


@register_term("kl", segments=("retain",), reference=True)
def kl(ctx: StepContext) -> torch.Tensor:
    """Forward KL(original || current) on retain response tokens (the paper's L_nor).

    L_nor = (1/B) sum_i (1/|y_i|) sum_t KL(p_ref(.|x_i,y_<t) || p_theta(.|x_i,y_<t)).

    KL(p || q) = sum_v p(v) (log p(v) - log q(v)), with p the frozen original (reference) model and
    q the model being trained, at every response position of the retain (normal) examples; mean per
    sequence, then over the batch. Both sides are log-softmax in fp32, so it is finite in fp16/bf16;
    the context computes them in chunks of positions (StepContext.forward_kl).
    Yao, Xu, Liu, "Large Language Model Unlearning", NeurIPS 2024, L_nor.
    """
    return ctx.seq_mean(ctx.forward_kl("retain"), "retain").mean()
