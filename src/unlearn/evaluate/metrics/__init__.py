"""The evaluation's metrics: pure functions of strings and numbers, and their registry.

Each function returns a `Metric`: an aggregate value and one value per example (None where the
example is flagged and left out of the aggregate). Nothing here loads a model: similarities,
judgements and NLLs are computed elsewhere (embed.py, judges, nll.py) and passed in. Which metric
applies to which set, its unit and which way is better: registry.py (`direction`).

    leak_rate            an output reproduces its target (BLEU >= threshold, or the key answer in it)
    extraction_leak_rate the same for passage continuations (the copyright setting)
    retain_accuracy      leak_rate on retain data, where reproducing the answer is good
    rouge_l_recall       longest-common-subsequence recall of the target's words
    harmful_rate         fraction judged harmful
    hallucination_rate   closer to the hallucinated answer than to the right one, by a margin
    similarity_bleu      BLEU of the unlearned model's output against the original's
    similarity_cosine    embedding cosine between the two
    nll                  teacher-forced NLL per response token
    diversity            unique-token fraction of each output
    degenerate_rate      empty outputs and repetition loops
    fluency              perplexity of the outputs under the original model; empty outputs flagged

A new metric is one new module here: its function and a @register_metric computing it from a
SetScoring. Modules are found by the registry, not listed.
"""

from unlearn.discovery import lazy_exports

# Public name -> the module that defines it, imported on first use (see unlearn.discovery).
_EXPORTS = {
    "similarity_bleu": "closeness",
    "similarity_cosine": "closeness",
    "harmful_rate": "judged",
    "hallucination_rate": "judged",
    "is_hallucinated": "judged",
    "nll": "likelihood",
    "degenerate_rate": "quality",
    "diversity": "quality",
    "fluency": "quality",
    "is_degenerate": "quality",
    "unique_token_fraction": "quality",
    "DESIRED": "registry",
    "FORBIDDEN": "registry",
    "FastMetric": "registry",
    "Metric": "registry",
    "MetricSpec": "registry",
    "SetScoring": "registry",
    "available_metrics": "registry",
    "better": "registry",
    "check_lengths": "registry",
    "direction": "registry",
    "fast_metrics": "registry",
    "get_metric": "registry",
    "mean": "registry",
    "metrics_for": "registry",
    "plot_axes": "registry",
    "register_metric": "registry",
    "round_value": "registry",
    "contains_answer": "text",
    "extraction_leak_rate": "text",
    "leak_rate": "text",
    "retain_accuracy": "text",
    "rouge_l_recall": "text",
    "rouge_l_recall_one": "text",
    "sentence_bleu": "text",
    "words": "text",
}


__all__ = sorted(_EXPORTS)

__getattr__ = lazy_exports(__name__, _EXPORTS)
