"""MUSE (Shi et al. 2024, "MUSE: Machine Unlearning Six-Way Evaluation for Language Models", arXiv
2407.06460), its metrics as open-unlearning computes them (configs/eval/muse.yaml and muse_metrics/,
src/evals/metrics/{memorization,utils,privacy}.py, src/evals/metrics/mia/):

    verbmem_forget   VerbMem: ROUGE-L F1 of the model's continuation of each verbmem/forget prompt
                     (greedy, 128 new tokens) against the true continuation `gt`
    knowmem_forget   KnowMem on the forget set: ROUGE-L F1 of the answer to each knowmem/forget_qa
                     question, asked after the forget_qa_icl few-shot examples (32 new tokens, cut
                     at a blank line or "Question")
    knowmem_retain   the same on knowmem/retain_qa with retain_qa_icl
    mia_auc          AUC of Min-K% Prob (k = 0.4) telling privleak/forget (members) from
                     privleak/holdout (non-members); 1: the forget set looks seen, 0.5: chance
    privleak         PrivLeak = (AUC'_model - AUC'_retain) / AUC'_retain * 100, AUC' = 1 - mia_auc
                     (MUSE's orientation), AUC'_retain from the retain model (reference_model), else
                     reference_auc (0.5, upstream's ref_value when no retain model's logs are given)

ROUGE-L is rouge-score's rougeL F-measure with use_stemmer=True (unlearn.evaluate.metrics.text);
membership scores come from unlearn.auditing.membership (one place for Min-K% and Min-K%++).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Sequence, Union

from unlearn.auditing.membership import privleak  # one place for the formula (TOFU uses it too)
from unlearn.benchmarks.registry import HIGHER, LOWER, ZERO, BenchMetric, register_benchmark
from unlearn.config import check, setting
from unlearn.data.sources.muse import muse_rows
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics.registry import Metric, mean

SOURCE = "Shi et al. 2024, arXiv 2407.06460; open-unlearning configs/eval/muse.yaml"
# open-unlearning's generation_args for knowmem (forget_knowmem_ROUGE.yaml): the answer ends at a
# blank line or where the model starts the next question.
KNOWMEM_STOPS = ("\n\n", "\nQuestion", "Question:")
# open-unlearning's template_args for the MUSE models (configs/model/Llama-2-7b-hf.yaml), the
# few-shot examples rendered with them (src/data/utils.py preprocess_chat_instance, no chat template).
QUESTION, ANSWER, END_OF_QUESTION, END_OF_ANSWER = "Question: ", "Answer: ", "\n", "\n\n"


@dataclass
class MuseParams:
    path: str = setting("", help="Local copy of muse-bench/MUSE-News or MUSE-Books in the hub's layout "
                                 "(raw/, verbmem/, knowmem/, privleak/); empty: the hub (online).")
    corpus: Literal["news", "books"] = setting("news", help="news or books: the hub data set when path is empty.")
    limit: Union[int, None] = setting(None, help="At most N rows of verbmem, of each knowmem set and of each "
                                                 "privleak side (null: all, 100 each on the hub).")
    max_new_tokens: int = setting(128, help="VerbMem: tokens generated after each prompt (upstream: 128).")
    knowmem_max_new_tokens: int = setting(32, help="KnowMem: tokens generated per answer (upstream: 32).")
    reference_model: str = setting("", help="The retain model (muse-bench/MUSE-news_retrain): measured too, "
                                            "its MIA AUC is PrivLeak's reference.")
    reference_auc: float = setting(0.5, help="PrivLeak's reference MIA AUC without reference_model (upstream's "
                                             "ref_value 0.5; or the retain model's AUC measured elsewhere).")
    attack: Literal["loss", "zlib", "min_k", "min_k_plus_plus"] = setting(
        "min_k", help="The membership score PrivLeak uses (upstream and the paper: min_k).")
    k: float = setting(0.4, help="Min-K%: the share of lowest-scoring tokens averaged (upstream: 0.4).")

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        check(self.knowmem_max_new_tokens >= 1, "knowmem_max_new_tokens",
              f"must be >= 1, got {self.knowmem_max_new_tokens}")
        check(0 <= self.reference_auc <= 1, "reference_auc", f"must be an AUC in [0, 1], got {self.reference_auc}")
        check(0 < self.k <= 1, "k", f"must be in (0, 1], got {self.k}")


@dataclass
class MuseData:
    verbmem: list[tuple[str, str]]  # (prompt, gt)
    knowmem: dict[str, list[tuple[str, str]]]  # forget/retain: (question, answer)
    icl: dict[str, list[tuple[str, str]]]  # forget/retain: the few-shot examples
    privleak: dict[str, list[str]] = field(default_factory=dict)  # forget/holdout: texts


# --------------------------------------------------------------------------------------------
# The metrics' formulas, on plain values (tests re-derive each by hand and against upstream's)


def knowmem_prompt(icl: Sequence[tuple[str, str]], question: str) -> str:
    """The few-shot prompt of a KnowMem question, as open-unlearning's QADataset builds it with the
    MUSE models' template: "Question: q\\nAnswer: a\\n\\n" per example, then "Question: q\\nAnswer: "."""
    shots = "".join(f"{QUESTION}{q}{END_OF_QUESTION}{ANSWER}{a}{END_OF_ANSWER}" for q, a in icl)
    return f"{shots}{QUESTION}{question}{END_OF_QUESTION}{ANSWER}"


def rouge_f1(outputs: Sequence[str], references: Sequence[str], stops: Sequence[str] = ()) -> Metric:
    """Mean ROUGE-L F1 (rouge-score's rougeL fmeasure, Porter-stemmed) of each output, cut at the first
    stop string and stripped, against its stripped reference: open-unlearning's eval_text_similarity."""
    from unlearn.evaluate.generate import cut_at_stop
    from unlearn.evaluate.metrics.text import rouge_l_scores

    if len(outputs) != len(references):
        raise ValueError(f"{len(outputs)} outputs but {len(references)} references")
    vals = [rouge_l_scores(cut_at_stop(o, stops).strip(), r.strip(), stem=True)[2] for o, r in zip(outputs, references)]
    return Metric(mean(vals), list(vals))


# --------------------------------------------------------------------------------------------
# The benchmark


def _pairs(params: MuseParams, config: str, split: str, a: str, b: str, limit: bool = True) -> list[tuple[str, str]]:
    rows = [(r[a], r[b]) for _, r in muse_rows(params.path, params.corpus, config, split)]
    return rows[: params.limit] if limit and params.limit is not None else rows


def _texts(params: MuseParams, split: str) -> list[str]:
    out = []
    for where, r in muse_rows(params.path, params.corpus, "privleak", split):
        if not r["text"].strip():
            raise UnlearnError(f"{where}: field 'text' is empty")
        out.append(r["text"])
    return out[: params.limit] if params.limit is not None else out


@register_benchmark(
    "muse", params=MuseParams, source=SOURCE,
    description="MUSE: verbatim and knowledge memorisation of the forget corpus, knowledge of the retain "
                "corpus, and privacy leakage (Min-K% membership AUC against the retain model's).",
    metrics=(
        BenchMetric("verbmem_forget", "fraction", LOWER, "VerbMem: ROUGE-L F1 of the continuation of forget "
                    "prompts vs the true text (upstream forget_verbmem_ROUGE)", SOURCE),
        BenchMetric("knowmem_forget", "fraction", LOWER, "KnowMem on forget QA, few-shot, ROUGE-L F1 "
                    "(upstream forget_knowmem_ROUGE)", SOURCE),
        BenchMetric("knowmem_retain", "fraction", HIGHER, "KnowMem on retain QA, few-shot, ROUGE-L F1 "
                    "(upstream retain_knowmem_ROUGE)", SOURCE),
        BenchMetric("privleak", "score", ZERO, "PrivLeak, percent: (AUC'_model - AUC'_ref) / AUC'_ref * 100, "
                    "AUC' = 1 - mia_auc; ref: the retain model (or reference_auc)", SOURCE),
        BenchMetric("mia_auc", "score", None, "membership AUC, privleak forget (members) vs holdout "
                    "(upstream mia_min_k); 0.5: chance", "Shi et al. 2024, arXiv 2310.16789 (Min-K% Prob)"),
    ),
)
class Muse:
    @staticmethod
    def prepare(params: MuseParams, where: Any) -> MuseData:
        data = MuseData(
            verbmem=_pairs(params, "verbmem", "forget", "prompt", "gt"),
            knowmem={s: _pairs(params, "knowmem", f"{s}_qa", "question", "answer") for s in ("forget", "retain")},
            icl={s: _pairs(params, "knowmem", f"{s}_qa_icl", "question", "answer", limit=False)
                 for s in ("forget", "retain")},
            privleak={s: _texts(params, s) for s in ("forget", "holdout")},
        )
        for name, rows in (("verbmem/forget", data.verbmem), ("knowmem/forget_qa", data.knowmem["forget"]),
                           ("knowmem/retain_qa", data.knowmem["retain"]), ("privleak/forget", data.privleak["forget"]),
                           ("privleak/holdout", data.privleak["holdout"])):
            if not rows:
                raise UnlearnError(f"{params.path or params.corpus}: MUSE {name} has no rows")
        return data

    @staticmethod
    def measure(probe: Any, data: MuseData, params: MuseParams) -> dict[str, Metric]:
        from unlearn.auditing.membership import auc, mia_scores

        out: dict[str, Metric] = {}
        continuations = probe.generate([p for p, _ in data.verbmem], max_new_tokens=params.max_new_tokens, raw=True)
        out["verbmem_forget"] = rouge_f1(continuations, [gt for _, gt in data.verbmem])
        # Both knowmem sets in one generate call (sorted batches over all of them).
        prompts = {s: [knowmem_prompt(data.icl[s], q) for q, _ in data.knowmem[s]] for s in ("forget", "retain")}
        answers = probe.generate(prompts["forget"] + prompts["retain"],
                                 max_new_tokens=params.knowmem_max_new_tokens, raw=True)
        n = len(prompts["forget"])
        out["knowmem_forget"] = rouge_f1(answers[:n], [a for _, a in data.knowmem["forget"]], KNOWMEM_STOPS)
        out["knowmem_retain"] = rouge_f1(answers[n:], [a for _, a in data.knowmem["retain"]], KNOWMEM_STOPS)
        # The whole text is scored, none of it given as a prompt (upstream's prefix_key names no field).
        scores = {}
        for side, texts in data.privleak.items():
            stats = probe.token_stats([""] * len(texts), texts, raw=True)
            scores[side] = mia_scores(stats, texts, params.k)[params.attack]
        value = auc(scores["forget"], scores["holdout"])
        out["mia_auc"] = Metric(value, [], {"attack": params.attack, "k": params.k,
                                            "forget_mean": mean(scores["forget"]), "holdout_mean": mean(scores["holdout"])})
        return out

    @staticmethod
    def models(params: MuseParams) -> dict[str, str]:
        return {"retain": params.reference_model} if params.reference_model else {}

    @staticmethod
    def summarize(by_model: dict[str, dict[str, Metric]], data: MuseData, params: MuseParams) -> None:
        retain = by_model.get("retain", {}).get("mia_auc")
        ref = retain.value if retain is not None else params.reference_auc
        how = "the retain model" if retain is not None else "reference_auc"
        for metrics in by_model.values():
            m = metrics.get("mia_auc")
            if m is not None and m.value is not None and ref is not None:
                metrics["privleak"] = Metric(privleak(m.value, ref), [], {"reference_auc": ref, "reference": how})
