"""Teacher-forced NLL per response token: cheap, exact, and the first thing to check after a run."""

from __future__ import annotations

import weakref
from typing import Any, Iterator, Sequence

import torch

from unlearn.data.batch import collate
from unlearn.data.encode import Encoded
from unlearn.models import ResponseLM


# Per model: (fast path, packing) as checked on its first batch (weak keys: freed with the model).
_CHECKED: "weakref.WeakKeyDictionary[Any, tuple[bool, bool]]" = weakref.WeakKeyDictionary()
_PACK_TRIED: "weakref.WeakSet[Any]" = weakref.WeakSet()


@torch.no_grad()
def response_batches(model: Any, encoded: Sequence[Encoded], pad_id: int,
                     batch_size: int = 8) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Teacher-forced forwards over `encoded` in batches, no gradient, in eval mode (the model's mode
    is restored after): (rows in the batch, logits at the positions that predict a response token,
    those tokens, the row of each position). What the target NLL, fluency and the audit's membership
    scores read. As in training (unlearn.models.ResponseLM), the output head runs at those positions
    only and rows are packed (shared prompts computed once), each only where a check on the first
    batch shows the same logits as the plain forward."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    lm = ResponseLM(model)
    lm.fast, lm.pack = _CHECKED.get(model, (None, None))
    try:
        for i in range(0, len(encoded), batch_size):
            batch = collate({"forget": list(encoded[i : i + batch_size])}, pad_id).to(device)
            if lm.fast is None or (not lm.pack and batch.input_ids.shape[0] > 1 and model not in _PACK_TRIED):
                # The training forward's fast paths, each kept only if it reproduces the plain logits;
                # checked once per model (packing needs a batch of two rows or more).
                lm.check_fast_path(batch.input_ids, batch.attention_mask, batch.labels)
                lm.check_packing(batch.input_ids, batch.attention_mask, batch.labels)
                if batch.input_ids.shape[0] > 1:
                    _PACK_TRIED.add(model)
                _CHECKED[model] = (lm.fast, lm.pack)
            logits, targets, rows = lm(batch.input_ids, batch.attention_mask, batch.labels)
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


def mean_response_nll(model: Any, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 8) -> float:
    """Mean over examples of the per-token response NLL (the same averaging as the loss terms)."""
    values = response_nll(model, encoded, pad_id, batch_size)
    return sum(values) / len(values)
