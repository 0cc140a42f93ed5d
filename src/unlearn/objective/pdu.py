"""PDU: logit-margin flattening on forget data under a retain-loss constraint, by primal-dual
updates (Entesari et al. 2025)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Union

import torch

from unlearn.config import check, setting
from unlearn.models.forward import per_position
from unlearn.objective.context import StepContext
from unlearn.objective.presets import register_preset
from unlearn.objective.registry import Binding, register_term


@dataclass
class PduParams:
    """Parameters of the pdu term."""

    epsilon: Union[float, None] = setting(
        None,
        help="Bound on the retain NLL (nats per token) the dual variable enforces. null: (1 + tolerance) "
        "x the retain NLL of the first training step, where the model is still the original (the "
        "paper's epsilon = (1 + alpha) L_rtn(original)). Set it when resuming a run.",
    )
    tolerance: float = setting(0.1, help="With epsilon null: how much worse than the original the retain NLL may get (0.1: 10 %).")
    dual_init: float = setting(
        100.0,
        help="Starting value of the dual variable lambda, the retain NLL's weight. The forget loss is a "
        "squared logit margin (often hundreds), hence the authors' 50-100.",
    )
    dual_step: float = setting(1.0, help="Dual ascent step: lambda <- max(0, lambda + dual_step (retain NLL - epsilon)) after each step.")
    warmup_steps: int = setting(
        0, help="Training steps (micro-batches) with lambda held at dual_init before it starts to move."
    )

    def __post_init__(self) -> None:
        check(self.epsilon is None or self.epsilon > 0, "epsilon", f"must be > 0 or null, got {self.epsilon}")
        check(self.tolerance >= 0, "tolerance", f"must be >= 0, got {self.tolerance}")
        check(self.dual_init >= 0, "dual_init", f"must be >= 0, got {self.dual_init}")
        check(self.dual_step >= 0, "dual_step", f"must be >= 0, got {self.dual_step}")
        check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")


@dataclass
class DualState:
    """What PDU keeps across steps: the dual variable, the bound, and how many steps it has seen."""

    lam: float
    epsilon: Union[float, None]
    steps: int = 0


def bind_pdu(model: Any, *, dual_init: float, epsilon: Union[float, None], **_: Any) -> Binding:
    """A fresh dual state for this run (nothing to resolve from the model)."""
    return Binding(state=DualState(lam=dual_init, epsilon=epsilon))


def logit_margin_of(logits: torch.Tensor) -> torch.Tensor:
    """(max_v z_v - mean_v z_v)^2 at each position, fp32: [positions]."""
    z = logits.float()
    return (z.max(-1).values - z.mean(-1)).pow(2)


def dual_update(state: DualState, retain: float, tolerance: float, dual_step: float, warmup_steps: int) -> None:
    """One step of the dual variable (after the value it weighs was computed): fix epsilon on the
    first step if unset, then lambda <- max(0, lambda + dual_step (retain - epsilon)) past warm-up."""
    if state.epsilon is None:
        state.epsilon = (1.0 + tolerance) * retain
    if state.steps >= warmup_steps:
        state.lam = max(0.0, state.lam + dual_step * (retain - state.epsilon))
    state.steps += 1


@register_term("pdu", segments=("forget", "retain"), bind=bind_pdu, params=PduParams)
def pdu(
    ctx: StepContext,
    epsilon: Union[float, None],
    tolerance: float,
    dual_init: float,
    dual_step: float,
    warmup_steps: int,
    state: DualState,
) -> torch.Tensor:
    """PDU: flatten forget logits subject to retain NLL <= epsilon, by primal-dual steps (Entesari et al. 2025).

    L_PDU = L_fgt + lambda (L_rtn - epsilon),
    L_fgt = (1/B_f) sum_i (1/|y_i|) sum_t (max_v z_t(v) - (1/V) sum_v z_t(v))^2   (forget rows)
    L_rtn = (1/B_r) sum_j (1/|y_j|) sum_t -log p(y_j,t | x_j, y_j,<t)              (retain rows)
    after each training step: lambda <- max(0, lambda + dual_step (L_rtn - epsilon))

    z_t are the model's logits at a forget response position: the logit-margin flattening loss is 0
    exactly when they are all equal (a uniform next-token distribution), needs no softmax and its
    gradient does not vanish near uniformity. lambda is the Lagrange multiplier of the constraint
    L_rtn <= epsilon: it grows while the retain NLL is above the bound and falls (to 0 at least)
    while below, so the retain term weighs as much as the constraint needs and no more. It is held
    at dual_init for the first warmup_steps steps; epsilon null takes (1 + tolerance) x the first
    step's retain NLL, the paper's epsilon = (1 + alpha) L_rtn(original). The value is the
    Lagrangian (it includes -lambda epsilon, so it can be negative).
    Entesari, Hatami, Khaziev, Ramakrishna, Fazlyab, "Constrained Entropic Unlearning: A Primal-Dual
    Framework for Large Language Models", arXiv 2506.05314 (2025). Follows open-unlearning's PDU
    trainer (dual update per step, retain NLL, warm-up; lambda starts at its alpha), except: the
    margin is taken at the positions that predict response tokens (theirs are shifted by one: the
    last prompt position is left out, the position after the last response token counted), it is
    averaged per sequence, epsilon may be left null, and warm-up counts steps, not epochs.
    The dual variable lives in the term's Binding.state: updated only when gradients are on (not
    in evaluation), once per call (per micro-batch with train.grad_accum > 1, as open-unlearning's
    per compute_loss), from this process's own retain NLL, and not saved in checkpoints.
    Preset `pdu`: the term alone (it holds its retain term, open-unlearning's NLL).
    """
    forget = ctx.seq_mean(per_position(logit_margin_of, ctx.segment_logits("forget")), "forget").mean()
    retain = ctx.seq_nll("retain").mean()
    value = float(retain.detach())
    lam = state.lam  # this step's weight; the update below is for the next step, as open-unlearning
    eps = state.epsilon if state.epsilon is not None else (1.0 + tolerance) * value
    if torch.is_grad_enabled() and retain.requires_grad:  # a training step, not an evaluation
        dual_update(state, value, tolerance, dual_step, warmup_steps)
    return forget + lam * (retain - eps)


register_preset("pdu", {"pdu": 1.0})
