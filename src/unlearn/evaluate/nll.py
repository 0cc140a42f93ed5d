"""Teacher-forced NLL per response token: cheap, exact, and the first thing to check after a run."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from unlearn.data.batch import collate
from unlearn.data.encode import Encoded
from unlearn.models import response_logits


@torch.no_grad()
def response_nll(model: Any, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 8) -> list[float]:
    """Mean NLL per response token of each example (nats), in input order."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    try:
        for i in range(0, len(encoded), batch_size):
            batch = collate({"forget": list(encoded[i : i + batch_size])}, pad_id).to(device)
            logits, targets, rows = response_logits(
                model, batch.input_ids, batch.attention_mask, batch.labels, fast=False
            )
            nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
            n = batch.input_ids.shape[0]
            sums = torch.zeros(n, device=nll.device).index_add(0, rows, nll)
            counts = torch.zeros(n, device=nll.device).index_add(0, rows, torch.ones_like(nll))
            out.extend((sums / counts.clamp(min=1)).tolist())
    finally:
        model.train(was_training)
    return out


def mean_response_nll(model: Any, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 8) -> float:
    """Mean over examples of the per-token response NLL (the same averaging as the loss terms)."""
    values = response_nll(model, encoded, pad_id, batch_size)
    return sum(values) / len(values)
