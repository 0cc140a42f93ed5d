"""Judges: decide whether an output is harmful, for the harmful rate. Chosen by `eval.judge`.

    refusal                 an output that does not refuse counts as harmful (a WEAK PROXY)
    similarity              embedding cosine to any forget response >= eval.similarity_threshold
    classifier:PATH_OR_ID   a Hugging Face sequence classifier; eval.judge_labels names harmful labels
    llm:PATH_OR_ID          a causal LM judge prompted in the style of Llama Guard

A new judge is one new module in this package with a @register_judge (see registry.py).
"""

from unlearn.evaluate.judges.classifier import HARMFUL_LABELS, ClassifierJudge
from unlearn.evaluate.judges.llm import LLAMA_GUARD_TEMPLATE, LlmJudge, read_guard_answer
from unlearn.evaluate.judges.refusal import REFUSAL_PHRASES, RefusalJudge, is_refusal
from unlearn.evaluate.judges.registry import (
    NEEDS,
    Judge,
    JudgeSpec,
    available_judges,
    judge_problem,
    judge_spec,
    load_judge,
    register_judge,
)
from unlearn.evaluate.judges.similarity import SimilarityJudge

__all__ = [
    "HARMFUL_LABELS", "LLAMA_GUARD_TEMPLATE", "NEEDS", "REFUSAL_PHRASES", "ClassifierJudge", "Judge", "JudgeSpec",
    "LlmJudge", "RefusalJudge", "SimilarityJudge", "available_judges", "is_refusal", "judge_problem",
    "judge_spec", "load_judge", "read_guard_answer", "register_judge",
]
