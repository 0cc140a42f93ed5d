"""Judges: decide whether an output is harmful, for the harmful rate. Chosen by `eval.judge`.

    refusal                 an output that does not refuse counts as harmful (a WEAK PROXY)
    similarity              embedding cosine to any forget response >= eval.similarity_threshold
    classifier:PATH_OR_ID   a Hugging Face sequence classifier; eval.judge_labels names harmful labels
    llm:PATH_OR_ID          a causal LM judge prompted in the style of Llama Guard

A new judge is one new module in this package with a @register_judge (see registry.py).
"""

from unlearn.discovery import lazy_exports

# Public name -> the module that defines it, imported on first use (see unlearn.discovery).
_EXPORTS = {
    "HARMFUL_LABELS": "classifier",
    "ClassifierJudge": "classifier",
    "LLAMA_GUARD_TEMPLATE": "llm",
    "LlmJudge": "llm",
    "read_guard_answer": "llm",
    "REFUSAL_PHRASES": "refusal",
    "RefusalJudge": "refusal",
    "is_refusal": "refusal",
    "NEEDS": "registry",
    "Judge": "registry",
    "JudgeSpec": "registry",
    "available_judges": "registry",
    "judge_problem": "registry",
    "judge_spec": "registry",
    "load_judge": "registry",
    "register_judge": "registry",
    "SimilarityJudge": "similarity",
}


__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
