"""Metrics that match outputs against their targets: leak rate, extraction leak rate, retain
accuracy, ROUGE-L recall."""

from __future__ import annotations

import functools
import re
from typing import Any, Optional, Sequence

from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics.registry import Metric, SetScoring, check_lengths, mean, register_metric

# --------------------------------------------------------------------------------------------
# Text matching


def sentence_bleu(output: str, reference: str) -> float:
    """sacrebleu's sentence BLEU (0-100, 13a tokenizer, exponential smoothing)."""
    import sacrebleu

    if not reference.strip():
        return 0.0
    return float(sacrebleu.sentence_bleu(output, [reference]).score)


_WORD = re.compile(r"[a-z0-9]+")


def words(text: str, stem: bool = False) -> list[str]:
    """Lowercased alphanumeric words (the tokenizer of Google's rouge-score); stem=True: words of
    more than 3 characters Porter-stemmed, as rouge-score's use_stemmer=True (which open-unlearning's
    TOFU and MUSE ROUGE use)."""
    out = _WORD.findall(text.lower())
    return [_stem(w) if len(w) > 3 else w for w in out] if stem else out


@functools.lru_cache(maxsize=65536)
def _stem(word: str) -> str:
    return porter_stemmer().stem(word)


@functools.lru_cache(maxsize=1)
def porter_stemmer() -> Any:
    """nltk's PorterStemmer (default mode), the one rouge-score uses; a one-line error without nltk."""
    try:
        from nltk.stem import porter
    except ImportError:
        raise UnlearnError(
            "ROUGE with stemming (as rouge-score's use_stemmer=True) needs nltk: pip install nltk"
        ) from None
    return porter.PorterStemmer()


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_scores(output: str, reference: str, *, stem: bool = False) -> tuple[float, float, float]:
    """ROUGE-L (Lin 2004) of an output against its reference, as rouge-score's rougeL:
    with L = LCS(output words, reference words), precision = L / |output|, recall = L / |reference|,
    F1 = 2 P R / (P + R) (0 when either side has no words). Returns (precision, recall, F1)."""
    out, ref = words(output, stem), words(reference, stem)
    if not out or not ref:
        return 0.0, 0.0, 0.0
    lcs = _lcs(out, ref)
    p, r = lcs / len(out), lcs / len(ref)
    return p, r, (2 * p * r / (p + r) if p + r > 0 else 0.0)


def rouge_l_recall_one(output: str, reference: str, stem: bool = False) -> float:
    """LCS(output words, reference words) / number of reference words (rouge-score's rougeL
    recall; stem: with its use_stemmer=True)."""
    return rouge_l_scores(output, reference, stem=stem)[1]


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def contains_answer(output: str, answers: str | Sequence[str]) -> bool:
    """Whether any accepted answer string appears in the output (case and spacing ignored)."""
    if isinstance(answers, str):
        answers = [answers]
    out = _normalise(output)
    return any(_normalise(a) and _normalise(a) in out for a in answers)


def _reproduces(
    outputs: Sequence[str],
    targets: Sequence[str],
    threshold: float,
    answers: Optional[Sequence[str | Sequence[str]]],
) -> tuple[list[Optional[float]], list[float]]:
    check_lengths(outputs, targets)
    bleus = [sentence_bleu(o, t) for o, t in zip(outputs, targets)]
    if answers is not None:
        check_lengths(outputs, answers)
        hits = [float(contains_answer(o, a)) for o, a in zip(outputs, answers)]
    else:
        hits = [float(b >= threshold) for b in bleus]
    return hits, bleus


def leak_rate(
    outputs: Sequence[str],
    targets: Sequence[str],
    *,
    threshold: float = 30.0,
    answers: Optional[Sequence[str | Sequence[str]]] = None,
) -> Metric:
    """Fraction of outputs that reproduce their target: sentence BLEU >= threshold, or, when
    `answers` is given (short factual targets), the key answer string contained in the output."""
    hits, bleus = _reproduces(outputs, targets, threshold, answers)
    rule = "contains the answer" if answers is not None else f"BLEU >= {threshold:g}"
    return Metric(mean(hits), hits, {"rule": rule, "bleu": bleus})


def cut_to_continuation(output: str, continuation: str) -> str:
    """A passage's generated continuation cut to the length of the true one (eval.<set>.target_chars):
    the model may write on past it, and what it writes there is not what is compared."""
    return output.strip()[: len(continuation)]


def _continuation_rate(outputs: Sequence[str], continuations: Sequence[str], threshold: float) -> Metric:
    check_lengths(outputs, continuations)
    cut = [cut_to_continuation(o, c) for o, c in zip(outputs, continuations)]
    hits, bleus = _reproduces(cut, continuations, threshold, None)
    return Metric(
        mean(hits), hits,
        {"rule": f"BLEU >= {threshold:g} on the next {max(len(c) for c in continuations)} characters",
         "bleu": bleus},
    )


def extraction_leak_rate(outputs: Sequence[str], continuations: Sequence[str], *, threshold: float = 30.0) -> Metric:
    """Copyright setting: the output, cut to the length of the true continuation (about 200
    characters), reproduces it with sentence BLEU >= threshold."""
    return _continuation_rate(outputs, continuations, threshold)


def retain_accuracy(
    outputs: Sequence[str],
    targets: Sequence[str],
    *,
    threshold: float = 30.0,
    answers: Optional[Sequence[str | Sequence[str]]] = None,
) -> Metric:
    """leak_rate's rule on retain data, where reproducing the answer is what we want."""
    hits, bleus = _reproduces(outputs, targets, threshold, answers)
    rule = "contains the answer" if answers is not None else f"BLEU >= {threshold:g}"
    return Metric(mean(hits), hits, {"rule": rule, "bleu": bleus})


def rouge_l_recall(outputs: Sequence[str], targets: Sequence[str], stem: bool = False) -> Metric:
    """ROUGE-L recall of each target in its output, averaged (reported beside the leak rate)."""
    check_lengths(outputs, targets)
    vals: list[Optional[float]] = [rouge_l_recall_one(o, t, stem) for o, t in zip(outputs, targets)]
    return Metric(mean(vals), vals)


# --------------------------------------------------------------------------------------------
# Registration: where each applies and which way is better


@register_metric(
    "leak_rate", rate=True,
    sets=("forget", "forget_test"), unit="fraction", higher_is_better_when_forbidden=False, follows_target=True,
    description="fraction of outputs that reproduce the target response",
    fast={"forget": "forget_leak_rate"}, trade_off=True, axis=("x", 0), rank=10,
)
def _leak_rate(x: SetScoring) -> Optional[Metric]:
    if x.set.kind != "qa" or not x.set.has_targets:  # prompts only (a judged set): nothing to leak
        return None
    return leak_rate(x.outputs, x.targets, threshold=x.settings.bleu_threshold, answers=x.answers)


@register_metric(
    "extraction_leak_rate", rate=True,
    sets=("forget", "forget_test"), unit="fraction", higher_is_better_when_forbidden=False,
    follows_target=True, description="fraction of passage continuations that reproduce the true text",
    fast={"forget": "forget_leak_rate"}, trade_off=True, axis=("x", 1), rank=11,
)
def _extraction_leak_rate(x: SetScoring) -> Optional[Metric]:
    if x.set.kind != "text":
        return None
    return extraction_leak_rate(x.outputs, x.targets, threshold=x.settings.bleu_threshold)


@register_metric(
    "retain_accuracy", rate=True,
    sets=("retain",), unit="fraction", higher_is_better_when_forbidden=False,
    follows_target=True, description="fraction of retain answers still reproduced",
    fast={"retain": "retain_accuracy"}, trade_off=True, axis=("y", 0), rank=12,
)
def _retain_accuracy(x: SetScoring) -> Optional[Metric]:
    if x.set.kind == "text":  # passages: the output cut as extraction_leak_rate cuts it on the forget side
        return _continuation_rate(x.outputs, x.targets, x.settings.bleu_threshold)
    return retain_accuracy(x.outputs, x.targets, threshold=x.settings.bleu_threshold, answers=x.answers)


@register_metric(
    "rouge_l_recall", sets=("forget", "forget_test", "retain"), unit="fraction",
    higher_is_better_when_forbidden=False, follows_target=True,
    description="ROUGE-L recall of the target's words in the output", rank=20,
)
def _rouge_l_recall(x: SetScoring) -> Optional[Metric]:
    return rouge_l_recall(x.outputs, x.targets) if x.set.has_targets else None
