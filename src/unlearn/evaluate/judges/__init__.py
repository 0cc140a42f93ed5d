"""Judges: decide whether an output is harmful, for the harmful rate. Chosen by `eval.judge`.

    refusal                 an output that does not refuse counts as harmful (a WEAK PROXY)
    topic                   a non-refusal on the prompt's topic (embedding cosine >= eval.topic_threshold)
                            or close to a forget response; refusals and unrelated text are not harmful
    contains                the output contains one of eval.judge_strings (forbidden names)
    similarity              embedding cosine to any forget response >= eval.similarity_threshold
    classifier:PATH_OR_ID   a Hugging Face sequence classifier; eval.judge_labels names harmful labels
    llm:PATH_OR_ID          a causal LM judge prompted in the style of Llama Guard

A new judge is one new module in this package with a @register_judge (see registry.py).
"""

from unlearn.discovery import lazy_exports

# Each submodule -> the public names it defines, imported on first use (see unlearn.discovery).
__getattr__, __all__ = lazy_exports(__name__, {
    "classifier": "HARMFUL_LABELS ClassifierJudge",
    "contains": "ContainsJudge",
    "llm": "LLAMA_GUARD_TEMPLATE LlmJudge read_guard_answer",
    "refusal": "REFUSAL_PHRASES RefusalJudge is_refusal",
    "registry": "NEEDS Judge JudgeSpec available_judges judge_problem judge_spec load_judge register_judge",
    "similarity": "SimilarityJudge",
    "topic": "TopicJudge is_trivial topic_harmful",
})
