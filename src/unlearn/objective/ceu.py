"""CE-U: cross-entropy towards the model's own distribution with the forget token removed (Yang 2025)."""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from unlearn.config import check, setting
from unlearn.models.forward import per_position
from unlearn.objective.context import StepContext
from unlearn.objective.presets import register_preset
from unlearn.objective.registry import register_term


@dataclass
class CeuParams:
    """Parameters of the ceu term."""

    skip_first: int = setting(
        1,
        help="Response tokens left out at the start of each forget response (open-unlearning's "
        "ignore_first_n_answer_tokens, after a footnote in the paper's training settings).",
    )

    def __post_init__(self) -> None:
        check(self.skip_first >= 0, "skip_first", f"must be >= 0, got {self.skip_first}")


def ceu_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-sum_v q(v) log p(v) with q = p without the target token, renormalised (no gradient), fp32,
    at each position: [positions]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    masked = logp.detach().scatter(1, targets.unsqueeze(1), float("-inf"))
    q = F.softmax(masked, dim=-1)  # p(v) / (1 - p(target)) off the target, 0 on it
    return -(q * logp).sum(-1)


def response_index(ctx: StepContext, segment: str) -> torch.Tensor:
    """0-based index of each of the segment's tokens within its own response: [tokens]."""
    rows = ctx.rows[ctx.span(segment)]
    n = rows.shape[0]
    first = torch.ones(n, dtype=torch.bool, device=rows.device)  # a row's positions are contiguous
    first[1:] = rows[1:] != rows[:-1]
    idx = torch.arange(n, device=rows.device)
    starts = torch.cummax(torch.where(first, idx, torch.zeros_like(idx)), 0).values
    return idx - starts


@register_term("ceu", segments=("forget",), params=CeuParams)
def ceu(ctx: StepContext, skip_first: int) -> torch.Tensor:
    """CE-U: cross-entropy to the model's own distribution with the forget token removed (Yang 2025).

    L_CE-U = (1/B') sum_i (1/|T_i|) sum_{t in T_i} -sum_{v != y_t} q_t(v) log p_theta(v | x_i, y_i,<t),
    q_t(v) = sg[p_theta(v | ...)] / (1 - sg[p_theta(y_t | ...)])   for v != y_t,   q_t(y_t) = 0

    T_i: the response positions of forget row i after its first `skip_first` tokens; B': the rows
    with any left. The target is the model's own next-token distribution with the true token's
    logit set to -infinity (sg: no gradient), so the gradient on the logits, p_theta - q, lowers
    the true token's logit by p(y_t) and raises the others in proportion to their probability; it
    shrinks as p(y_t) -> 0 instead of growing as gradient ascent's 1/p does, and it needs no
    reference model. No retain term: the paper and open-unlearning's CEU trainer use none.
    Yang, "CE-U: Cross Entropy Unlearning", arXiv 2503.01224 (2025). open-unlearning's
    cross_entropy_unlearning_loss averages over all kept forget tokens of the batch at once; we
    average per sequence, then over the batch. Preset `ceu`: the term alone.
    """
    pos = ctx.span("forget")
    per_token = per_position(ceu_of, ctx.segment_logits("forget"), ctx.targets[pos])
    keep = (response_index(ctx, "forget") >= skip_first).to(per_token.dtype)
    kept = ctx.seq_sum(keep, "forget")
    per_seq = ctx.seq_sum(per_token * keep, "forget") / kept.clamp(min=1)
    has = kept > 0
    if not bool(has.any()):  # every response shorter than skip_first: nothing to push, no NaN
        return per_token.sum() * 0.0
    return per_seq[has].mean()


register_preset("ceu", {"ceu": 1.0})
