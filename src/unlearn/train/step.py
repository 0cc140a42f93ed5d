"""One optimisation step, the only one: `unlearn run`, `unlearn finetune`, the culprit check of a
non-finite gradient and benchmarks/ all call `train_step` (or `forward_objective`, what it is built on).

    for each micro-batch: one fused forward -> StepContext -> objective -> backward (loss / grad_accum)
    -> agree across processes -> clip the gradient -> optimizer step (or skip a non-finite one)
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from unlearn.data import Batch, StepBatcher
from unlearn.distributed import agree, clip_gradients, nonfinite_terms, sharded, sum_across
from unlearn.objective import Objective, StepContext


@dataclass
class StepParts:
    """What a step runs on (unlearn.train.setup.prepare_policy builds it)."""

    accelerator: Any
    policy: Any  # the ResponseLM as the engine prepared it (DDP/FSDP/DeepSpeed wrapper)
    inner: Any  # the ResponseLM inside that wrapper
    objective: Objective
    reference_fn: Callable[..., tuple] | None  # StepContext's reference forward (unlearn.distributed)
    batcher: StepBatcher
    params: list[torch.nn.Parameter]  # the trained ones (FSDP2: its shards)
    optimizer: Any
    reference: Any = None  # the models.Reference reference_fn runs
    grad_accum: int = 1
    max_grad_norm: float | None = 1.0
    # Name the term behind a non-finite gradient and skip the step. Off under fp16, whose gradient
    # scaler skips such steps itself (and lowers its scale): they are expected there.
    trace_gradients: bool = True


@dataclass
class StepResult:
    """What one step did. values: 'loss', each term's unweighted value and 'forget_nll' (when the
    batch has forget rows), each the mean over micro-batches and processes."""

    values: dict[str, float] = field(default_factory=dict)
    tokens: int = 0  # response tokens trained on, all processes
    grad_norm: float | None = None  # before clipping; None when the step was skipped
    nonfinite: list[str] = field(default_factory=list)  # what was not finite; [] when the step was applied
    stop_requested: bool = False  # a SIGINT/SIGTERM on any process
    # An fp16 gradient overflow that the loss scaler skipped (and lowered its scale for): expected
    # while the scale settles, so not counted towards train.max_nonfinite.
    scaler_skipped: bool = False


def forward_objective(
    parts: StepParts, batch: Batch, policy: Any = None
) -> tuple[StepContext, torch.Tensor, dict[str, torch.Tensor]]:
    """One fused forward of `batch` and the objective on it: (context, weighted loss, {term: value}).

    policy: the module to run (default: parts.policy, the engine's wrapper)."""
    objective = parts.objective
    ctx = StepContext(
        parts.policy if policy is None else policy, batch, parts.reference_fn,
        objective.reference_segments, objective.hidden_layers,
    )
    loss, values = objective(ctx)
    return ctx, loss, values


def train_step(parts: StepParts, step: int, stop_requested: Callable[[], bool] | None = None) -> StepResult:
    """Optimisation step `step` (0-based): its grad_accum micro-batches forward and backward, then
    one optimizer step, or none when a value or the gradient is not finite (the result says which
    term). The learning-rate schedule is the caller's. stop_requested(): this process's stop flag,
    read once the micro-batches are done (a signal during them counts) and or-ed across processes
    with the step's values (one collective)."""
    acc, accum = parts.accelerator, parts.grad_accum
    sums: dict[str, float] = {}
    tokens = 0
    bad: list[str] = []
    for micro in range(accum):
        batch = parts.batcher.batch(step * accum + micro).to(acc.device)
        tokens += batch.tokens
        sync = acc.no_sync(parts.policy) if micro < accum - 1 else nullcontext()
        with sync, acc.autocast():
            ctx, loss, values = forward_objective(parts, batch)
            # Decided on every rank's values at once, so that all ranks skip the backward (and its
            # gradient all-reduce) together; DeepSpeed would step inside it.
            bad = nonfinite_terms(acc, loss, values)
            if not bad:
                acc.backward(loss / accum)
        if bad:
            break
        for k, v in values.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) / accum
        if ctx.has("forget"):
            sums["forget_nll"] = sums.get("forget_nll", 0.0) + float(ctx.seq_nll("forget").detach().mean()) / accum
    sums, tokens, stop = agree(acc, sums, tokens, stop_requested is not None and stop_requested())

    grad_norm = None
    scaler_skip = False
    if not bad:
        if parts.max_grad_norm is not None:
            grad_norm = clip_gradients(acc, parts.params, parts.max_grad_norm)
        else:
            grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in parts.params if p.grad is not None]))
        if not math.isfinite(grad_norm) and parts.trace_gradients:
            parts.optimizer.zero_grad(set_to_none=True)
            bad = [f"{t} gradient" for t in gradient_culprits(parts, step)] or ["gradient"]
        elif not math.isfinite(grad_norm):
            bad = ["gradient"]
            # fp16: the loss scaler skips this step inside optimizer.step() and lowers its scale;
            # an overflow it is there to absorb, so the step is skipped but not counted as a fault.
            scaler_skip = getattr(acc, "scaler", None) is not None
    if not bad or scaler_skip:
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return StepResult(sums, tokens, None if bad else grad_norm, bad, stop, scaler_skip)


def gradient_culprits(parts: StepParts, step: int) -> list[str]:
    """Which terms have a non-finite gradient when all their values are finite: each term's
    gradient alone, recomputed on step `step`'s micro-batches with the step's own forward and
    objective (so with the values terms resolved from the model, e.g. rmu's layer). Runs only after
    a non-finite gradient. The unwrapped model runs (a DDP forward without its backward would
    leave DDP waiting); under FSDP/DeepSpeed it cannot run alone: the answer there is []."""
    acc = parts.accelerator
    if sharded(acc):
        return []
    names = [wt.term.name for wt in parts.objective.terms]
    flags = [0.0] * len(names)
    for index in range(step * parts.grad_accum, (step + 1) * parts.grad_accum):
        batch = parts.batcher.batch(index).to(acc.device)
        with acc.autocast():
            _, _, values = forward_objective(parts, batch, policy=parts.inner)
            for i, name in enumerate(names):
                if not values[name].requires_grad:
                    continue
                grads = torch.autograd.grad(values[name], parts.params, retain_graph=True, allow_unused=True)
                if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
                    flags[i] = 1.0
    flags = sum_across(acc, flags)
    return [name for name, f in zip(names, flags) if f > 0]
