"""Metrics across the outputs of a set: a model that gives the same answer to every prompt.

Diversity (quality.py) is measured within one output, so "The American" given to every question
scores as perfectly diverse. These look at the set's outputs together:

    distinct_answers    unique normalised outputs / outputs
    top_answer_share    the share of outputs that are the most frequent (normalised) answer
    distinct_1/2        distinct-n (Li et al. 2016): unique n-grams / all n-grams over every output

A metric receives the whole set's outputs through its SetScoring, so nothing else is needed.
"""

from __future__ import annotations

from collections import Counter
from typing import Optional, Sequence

from unlearn.evaluate.metrics.registry import Metric, SetScoring, register_metric
from unlearn.evaluate.metrics.text import words

ALL_SETS = ("forget", "forget_test", "retain", "normal")


def normalise_answer(text: str) -> str:
    """An output as an answer: lowercased alphanumeric words, so case, spacing and punctuation
    do not make two answers distinct ("The American." == "the american")."""
    return " ".join(words(text))


def distinct_answers(outputs: Sequence[str]) -> Metric:
    """Unique normalised outputs / outputs. Each output's value is 1 / (outputs giving its answer),
    so their mean is the aggregate; None for no outputs."""
    answers = [normalise_answer(o) for o in outputs]
    counts = Counter(answers)
    per: list[Optional[float]] = [1.0 / counts[a] for a in answers]
    return Metric(len(counts) / len(answers) if answers else None, per, {"distinct": len(counts)})


def top_answer_share(outputs: Sequence[str]) -> Metric:
    """The share of outputs that give the most frequent normalised answer (ties: the first seen).
    Each output's value is 1 if it is that answer, so the aggregate is a rate."""
    answers = [normalise_answer(o) for o in outputs]
    if not answers:
        return Metric(None, [])
    top, count = Counter(answers).most_common(1)[0]
    per: list[Optional[float]] = [float(a == top) for a in answers]
    return Metric(count / len(answers), per, {"answer": top, "count": count})


def distinct_n(outputs: Sequence[str], n: int) -> Metric:
    """distinct-n over the set: unique n-grams / all n-grams of whitespace tokens, n-grams taken
    within each output; None when no output has n tokens. No per-example value."""
    grams = [tuple(toks[i:i + n]) for o in outputs for toks in [o.split()] for i in range(len(toks) - n + 1)]
    value = len(set(grams)) / len(grams) if grams else None
    return Metric(value, [None] * len(outputs), {"ngrams": len(grams)})


@register_metric(
    "distinct_answers", detail=True, sets=ALL_SETS, unit="fraction", higher_is_better_when_forbidden=True,
    description="distinct answers over the set: unique normalised outputs / outputs", rank=63,
    fast={"normal": "normal_distinct_answers", "retain": "retain_distinct_answers"},
)
def _distinct_answers(x: SetScoring) -> Optional[Metric]:
    return distinct_answers(x.outputs)


@register_metric(
    "top_answer_share", sets=ALL_SETS, unit="fraction", higher_is_better_when_forbidden=False,
    description="share of the outputs that are the set's most frequent answer", rank=64,
    fast={"normal": "normal_top_answer_share", "retain": "retain_top_answer_share"},
)
def _top_answer_share(x: SetScoring) -> Optional[Metric]:
    return top_answer_share(x.outputs)


@register_metric(
    "distinct_1", detail=True, sets=ALL_SETS, unit="fraction", higher_is_better_when_forbidden=True,
    description="distinct-1 over the set: unique words / all words of every output", rank=65,
)
def _distinct_1(x: SetScoring) -> Optional[Metric]:
    return distinct_n(x.outputs, 1)


@register_metric(
    "distinct_2", detail=True, sets=ALL_SETS, unit="fraction", higher_is_better_when_forbidden=True,
    description="distinct-2 over the set: unique word pairs / all word pairs of every output", rank=66,
)
def _distinct_2(x: SetScoring) -> Optional[Metric]:
    return distinct_n(x.outputs, 2)
