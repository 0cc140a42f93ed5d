"""Teacher-forced NLL per response token: cheap, exact, and the first thing to check after a run."""

from __future__ import annotations

import weakref
from typing import Any, Iterator, Sequence

import torch

from unlearn.data.batch import collate
from unlearn.data.encode import Encoded
from unlearn.models import ResponseLM


# Per model: which fast paths reproduced its plain logits ({"fast": bool, "pack": bool}), each
# checked once, on the first batch that can show it (weak keys: forgotten with the model).
_CHECKED: "weakref.WeakKeyDictionary[Any, dict[str, bool]]" = weakref.WeakKeyDictionary()
CHECK_ROWS = 4  # rows of the first batch each check compares on (packing needs two or more)


@torch.no_grad()
def response_batches(model: Any, encoded: Sequence[Encoded], pad_id: int,
                     batch_size: int = 8) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Teacher-forced forwards over `encoded` in batches, no gradient, in eval mode (the model's mode
    is restored after): (rows in the batch, logits at the positions that predict a response token,
    those tokens, the row of each position). What the target NLL, fluency and the audit's membership
    scores read. As in training (unlearn.models.ResponseLM), the output head runs at those positions
    only and rows are packed (shared prompts computed once), each only where a check on the first
    CHECK_ROWS rows of the first batch shows the same logits as the plain forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lm = ResponseLM(model)
    checked = _CHECKED.setdefault(model, {})
    try:
        for i in range(0, len(encoded), batch_size):
            batch = collate({"forget": list(encoded[i : i + batch_size])}, pad_id).to(device)
            args = (batch.input_ids, batch.attention_mask, batch.labels)
            # Each check runs the model twice more: on the first CHECK_ROWS rows, not the whole batch
            # (at eval.batch_size 64 the checks on full batches cost as much as the NLL itself).
            few = tuple(a[:CHECK_ROWS] for a in args)
            if "fast" not in checked:
                checked["fast"] = lm.check_fast_path(*few)
            lm.fast = checked["fast"]
            if "pack" not in checked and batch.input_ids.shape[0] > 1:  # packing needs two rows to show
                checked["pack"] = lm.check_packing(*few)
            lm.pack = checked.get("pack", False)
            logits, targets, rows = lm(*args)
            yield batch.input_ids.shape[0], logits, targets, rows
    finally:
        model.train(was_training)


def response_nll(model: Any, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 8) -> list[float]:
    """Mean NLL per response token of each example (nats), in input order."""
    out: list[float] = []
    for n, logits, targets, rows in response_batches(model, encoded, pad_id, batch_size):
        with torch.no_grad():
            nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
            sums = torch.zeros(n, device=nll.device).index_add(0, rows, nll)
            counts = torch.zeros(n, device=nll.device).index_add(0, rows, torch.ones_like(nll))
        out.extend((sums / counts.clamp(min=1)).tolist())
    return out


def grouped_nll(model: Any, groups: Sequence[Sequence[Encoded]], pad_id: int, batch_size: int = 8) -> list[list[float]]:
    """response_nll of several lists of rows, in one pass: every row ordered by its prompt tokens, so
    that rows asking the same prompt (a set's target and two models' outputs, say) land in one batch,
    where packing computes that prompt once (unlearn.models.pack), and small lists fill batches
    together. The values come back per list, in its order."""
    flat = [(g, i, e) for g, rows in enumerate(groups) for i, e in enumerate(rows)]
    order = sorted(range(len(flat)), key=lambda j: flat[j][2].ids[: flat[j][2].n_prompt])
    out: list[list[float]] = [[0.0] * len(rows) for rows in groups]
    if flat:
        for j, v in zip(order, response_nll(model, [flat[j][2] for j in order], pad_id, batch_size)):
            g, i, _ = flat[j]
            out[g][i] = v
    return out


def mean_response_nll(model: Any, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 8) -> float:
    """Mean over examples of the per-token response NLL (the same averaging as the loss terms)."""
    values = response_nll(model, encoded, pad_id, batch_size)
    return sum(values) / len(values)
