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
    degenerate_rate      empty outputs, repetition loops and loops inside words
    distinct_answers     unique normalised outputs over the set (collapse.py: across outputs)
    top_answer_share     share of the set's most frequent answer
    distinct_1/2         distinct-n over all outputs of the set
    fluency              perplexity of the outputs under the original model; empty outputs flagged

A new metric is one new module here: its function and a @register_metric computing it from a
SetScoring. Modules are found by the registry, not listed.
"""

from unlearn.discovery import lazy_exports

# Each submodule -> the public names it defines, imported on first use (see unlearn.discovery).
__getattr__, __all__ = lazy_exports(__name__, {
    "closeness": "similarity_bleu similarity_cosine",
    "collapse": "distinct_answers distinct_n normalise_answer top_answer_share",
    "interval": "rate_interval wilson",
    "judged": "harmful_rate hallucination_rate is_hallucinated",
    "likelihood": "nll",
    "quality": "degenerate_rate diversity fluency is_degenerate is_word_loop unique_token_fraction word_loop",
    "registry": (
        "DESIRED FORBIDDEN FastMetric Metric MetricSpec SetScoring available_metrics "
        "better check_lengths direction fast_metrics get_metric mean metrics_for "
        "plot_axes register_metric round_value"
    ),
    "text": (
        "contains_answer extraction_leak_rate leak_rate retain_accuracy rouge_l_recall "
        "rouge_l_recall_one sentence_bleu words"
    ),
})
