"""Output quality whatever the set: diversity, degenerate rate, fluency."""

from __future__ import annotations

import math
import re
from typing import Any, Optional, Sequence

from unlearn.evaluate.metrics.registry import Metric, SetScoring, check_lengths, mean, register_metric

def unique_token_fraction(text: str) -> float:
    """Distinct whitespace tokens / all whitespace tokens; 0 for an empty output."""
    toks = text.split()
    return len(set(toks)) / len(toks) if toks else 0.0


def diversity(outputs: Sequence[str]) -> Metric:
    """Unique-token fraction of each output, averaged (the paper's diversity; empty outputs score 0)."""
    vals: list[Optional[float]] = [unique_token_fraction(o) for o in outputs]
    return Metric(mean(vals), vals)


# A token of at least LOOP_TOKEN characters of which at least LOOP_COVER is one unit of at least
# LOOP_UNIT characters repeated back to back is a loop inside a word ("Vefbrjartbrjartbrjart"): what
# over-unlearned models produce once whole-word repetition is gone. Real words with a short repeat
# ("couscous", "Mississippi") are shorter than LOOP_TOKEN or mostly not the repeat.
LOOP_TOKEN, LOOP_UNIT, LOOP_COVER = 12, 3, 0.5
_WORD_LOOP = re.compile(r"(.{%d,}?)\1+" % LOOP_UNIT, re.DOTALL)


def word_loop(token: str) -> int:
    """Characters of `token` in its longest run of one unit (>= LOOP_UNIT characters) repeated back
    to back, at least twice; 0 if there is none."""
    return max((len(m.group(0)) for m in _WORD_LOOP.finditer(token)), default=0)


def is_word_loop(token: str) -> bool:
    """A long token (>= LOOP_TOKEN characters) mostly (>= LOOP_COVER) made of a repeated unit."""
    return len(token) >= LOOP_TOKEN and word_loop(token) >= LOOP_COVER * len(token)


def is_degenerate(text: str, *, min_tokens: int = 10, min_unique: float = 0.3) -> bool:
    """Empty or whitespace; or at least `min_tokens` tokens of which under `min_unique` are distinct
    (a repetition loop, the usual failure of over-unlearned models); or loops inside words
    (is_word_loop) holding at least half of the output's characters."""
    toks = text.split()
    if not toks:
        return True
    if len(toks) >= min_tokens and len(set(toks)) / len(toks) < min_unique:
        return True
    looping = sum(len(t) for t in toks if is_word_loop(t))
    return looping >= 0.5 * sum(len(t) for t in toks)


def degenerate_rate(outputs: Sequence[str]) -> Metric:
    """Fraction of outputs that are empty or repetition loops (see is_degenerate)."""
    vals: list[Optional[float]] = [float(is_degenerate(o)) for o in outputs]
    return Metric(mean(vals), vals,
                  {"empty": sum(not o.strip() for o in outputs)})


def fluency(outputs: Sequence[str], nll_per_token: Sequence[Optional[float]]) -> Metric:
    """Perplexity of the outputs under the ORIGINAL model.

    nll_per_token: each output's mean NLL per token given its prompt (None where not computed).
    Empty or whitespace outputs are flagged (extra['empty']) and left out, not averaged in as
    if fluent. The aggregate is exp(mean NLL): the geometric mean of the per-output perplexities.
    """
    check_lengths(outputs, nll_per_token)
    per: list[Optional[float]] = []
    kept: list[float] = []
    for o, n in zip(outputs, nll_per_token):
        if not o.strip() or n is None or not math.isfinite(n):
            per.append(None)
            continue
        per.append(math.exp(n))
        kept.append(n)
    value = math.exp(sum(kept) / len(kept)) if kept else None
    return Metric(value, per, {"empty": sum(not o.strip() for o in outputs)})


@register_metric(
    "diversity", sets=("forget", "forget_test", "retain", "normal"), unit="fraction", higher_is_better_when_forbidden=True,
    description="unique-token fraction of an output, averaged", rank=60,
)
def _diversity(x: SetScoring) -> Optional[Metric]:
    return diversity(x.outputs)


@register_metric(
    "degenerate_rate", rate=True,
    sets=("forget", "forget_test", "retain", "normal"), unit="fraction", higher_is_better_when_forbidden=False,
    description="fraction of outputs that are empty, a repetition loop or loops inside words", rank=61,
)
def _degenerate_rate(x: SetScoring) -> Optional[Metric]:
    return degenerate_rate(x.outputs)


@register_metric(
    "fluency", sets=("forget", "forget_test", "retain", "normal"), unit="perplexity", higher_is_better_when_forbidden=False,
    description="perplexity of the outputs under the original model (empty outputs left out)", rank=62,
)
def _fluency(x: SetScoring) -> Optional[Metric]:
    return None if x.fluency_nll is None else fluency(x.outputs, x.fluency_nll)
