"""Closeness of the unlearned model's outputs to the original model's (on the normal set)."""

from __future__ import annotations

from typing import Any, Optional, Sequence

from unlearn.evaluate.metrics.registry import Metric, SetScoring, check_lengths, mean, register_metric

from unlearn.evaluate.metrics.text import sentence_bleu


def similarity_bleu(outputs: Sequence[str], original_outputs: Sequence[str]) -> Metric:
    """Sentence BLEU of each unlearned output against the original model's output for the same prompt."""
    check_lengths(outputs, original_outputs)
    vals: list[Optional[float]] = [
        100.0 if not o.strip() and not r.strip() else sentence_bleu(o, r)
        for o, r in zip(outputs, original_outputs)
    ]
    return Metric(mean(vals), vals)


def similarity_cosine(cosines: Sequence[float]) -> Metric:
    """Embedding cosine between each unlearned output and the original's, averaged."""
    vals: list[Optional[float]] = [float(c) for c in cosines]
    return Metric(mean(vals), vals)


@register_metric(
    "similarity_bleu", sets=("normal",), unit="bleu", higher_is_better_when_forbidden=True,
    description="BLEU of the unlearned model's outputs against the original model's", axis=("y", 2), rank=40,
)
def _similarity_bleu(x: SetScoring) -> Optional[Metric]:
    if x.original_outputs is None:
        return None
    return similarity_bleu(x.outputs, x.original_outputs)


@register_metric(
    "similarity_cosine", sets=("normal",), unit="cosine", higher_is_better_when_forbidden=True,
    description="embedding cosine between the unlearned and the original model's outputs",
    axis=("y", 1), rank=41, fast={"normal": "normal_cosine"},
)
def _similarity_cosine(x: SetScoring) -> Optional[Metric]:
    if x.original_outputs is None or x.embedder is None:
        return None
    return similarity_cosine(x.embedder.pairwise(x.outputs, x.original_outputs))
