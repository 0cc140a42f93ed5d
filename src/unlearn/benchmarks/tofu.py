"""TOFU (Maini et al. 2024, "TOFU: A Task of Fictitious Unlearning for LLMs", arXiv 2401.06121), as
open-unlearning evaluates it (locuslab/open-unlearning: configs/eval/tofu.yaml and tofu_metrics/,
src/evals/metrics/memorization.py, utility.py, privacy.py, utils.py, mia/).

Four evaluation sets, each a file of the hub's locuslab/TOFU (unlearn.data.sources.tofu):

    forget   {forget_split}_perturbed    question, answer, paraphrased_answer, perturbed_answer[]
    retain   retain_perturbed            the same fields, 400 questions about the retained authors
    ra       real_authors_perturbed      question, answer, perturbed_answer[] (real authors)
    wf       world_facts_perturbed       question, answer, perturbed_answer[] (world facts)
    holdout  holdout01/05/10             question, answer (privleak's non-members)

Every likelihood is teacher forced on the answer tokens under the run's template (data.template),
nll = the answer's mean negative log-likelihood per token (open-unlearning's avg_loss):

    Q_A_Prob          mean_i exp(-nll(answer_i))
    Q_A_Prob_normalised (ra, wf)  mean_i p_i / (p_i + sum_j w_ij + 1e-10), p = exp(-nll(answer)),
                      w_ij = exp(-nll(perturbed_ij))
    Q_A_ROUGE         mean_i ROUGE-L recall of answer_i in the greedy output (rouge-score, stemmed)
    truth ratio       tr_i = exp(-mean_j nll(perturbed_ij)) / (exp(-nll(correct_i)) + 1e-10);
                      correct = the paraphrased answer (forget, retain), the answer (ra, wf)
      forget_truth_ratio   mean_i min(tr_i, 1 / (tr_i + 1e-10))   ("closer_to_1_better")
      *_Truth_Ratio        mean_i max(0, 1 - tr_i)                ("true_better")
    model_utility     harmonic mean of the 9 retain/ra/wf Prob(_normalised), ROUGE, Truth_Ratio
    forget_quality    p-value of scipy.stats.ks_2samp(tr of this model, tr of the retain model)
                      on the forget set (needs retain_model)
    mia_min_k         AUC of Min-K% (k = 0.4) telling forget from holdout (1: forget much likelier)
    privleak          ((1 - auc) - (1 - ref)) / ((1 - ref) + 1e-10) * 100, ref = the retain model's
                      AUC, else 0.5
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Optional, Sequence, Union

from unlearn.benchmarks.registry import HIGHER, LOWER, ONE, ZERO, BenchMetric, register_benchmark
from unlearn.config import check, setting
from unlearn.data.sources.tofu import HOLDOUT_OF, answer_list, string_field, tofu_rows
from unlearn.auditing.membership import privleak  # one place for the formula (MUSE uses it too)
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics.registry import Metric, mean

EPS = 1e-10  # open-unlearning's guard in every ratio; kept so that values agree to the last digit
MIN_K = 0.4  # open-unlearning's k for TOFU's mia_min_k (configs/eval/tofu_metrics/mia_min_k.yaml)
RETAIN = "retain"  # the reference model's column
UPSTREAM = "open-unlearning src/evals/metrics/"
UTILITY = tuple(f"{s}_{m}" for s in ("retain", "ra", "wf") for m in (
    "Q_A_Prob" if s == "retain" else "Q_A_Prob_normalised", "Q_A_ROUGE", "Truth_Ratio"))


# ---- the formulas (each as open-unlearning computes it) -------------------------------------------

def truth_ratio(correct_nll: float, perturbed_nlls: Sequence[float]) -> float:
    """TOFU's truth ratio of one question: the perturbed answers' probability (per token, their
    mean NLL averaged first) over the correct one's: exp(-mean_j nll_j) / (exp(-nll_c) + 1e-10).
    memorization.py truth_ratio (aggregate_to_1D over the perturbed answers' avg_loss)."""
    return math.exp(-sum(perturbed_nlls) / len(perturbed_nlls)) / (math.exp(-correct_nll) + EPS)


def closer_to_one(ratios: Sequence[float]) -> float:
    """The forget set's aggregate: mean min(tr, 1 / (tr + 1e-10)), 1 when correct and perturbed
    answers are equally likely (memorization.py closer_to_1_better)."""
    return sum(min(r, 1 / (r + EPS)) for r in ratios) / len(ratios)


def true_better(ratios: Sequence[float]) -> float:
    """The other sets' aggregate: mean max(0, 1 - tr), 1 when the correct answer is far likelier
    (memorization.py true_better)."""
    return sum(max(0.0, 1 - r) for r in ratios) / len(ratios)


def normalised_probability(correct_nll: float, perturbed_nlls: Sequence[float]) -> float:
    """p / (p + sum_j w_j + 1e-10) with p = exp(-nll(answer)), w_j = exp(-nll(perturbed_j)):
    the answer's share among the options (memorization.py probability_w_options)."""
    p = math.exp(-correct_nll)
    return p / (p + sum(math.exp(-n) for n in perturbed_nlls) + EPS)


def harmonic_mean(values: Sequence[float]) -> float:
    """n / sum(1 / v): 0 when any value is 0, as scipy.stats.hmean (utility.py hm_aggregate)."""
    if any(v <= 0 for v in values):
        return 0.0
    return len(values) / sum(1 / v for v in values)


def ks_pvalue(model_ratios: Sequence[float], retain_ratios: Sequence[float]) -> float:
    """Forget quality: the two-sample Kolmogorov-Smirnov test's p-value between the forget-set truth
    ratios of this model and of the retain-only model (privacy.py ks_test; scipy.stats.ks_2samp)."""
    from scipy.stats import ks_2samp

    return float(ks_2samp(list(model_ratios), list(retain_ratios)).pvalue)


# ---- parameters and data --------------------------------------------------------------------------

@dataclass
class TofuParams:
    path: Union[str, None] = setting(
        None, help="Folder with the hub's TOFU files (forget01_perturbed.json, retain_perturbed.json, "
        "real_authors_perturbed.json, world_facts_perturbed.json, holdout01.json, ...). null: the hub.")
    forget_split: Literal["forget01", "forget05", "forget10"] = setting(
        "forget10", help="The forget set unlearned (its *_perturbed file is evaluated).")
    retain_model: Union[str, None] = setting(
        None, help="A model fine-tuned on the matching retain split only (e.g. open-unlearning/"
        "tofu_Llama-3.2-1B-Instruct_retain99): measured too, for forget_quality and privleak.")
    limit: Union[int, None] = setting(None, help="Evaluate the first N questions of each set only.")
    max_new_tokens: int = setting(200, help="Tokens generated per question for ROUGE (upstream: 200).")
    question_key: Literal["question", "paraphrased_question"] = setting(
        "question", help="The question field asked on the forget and retain sets (as upstream's).")
    privleak: bool = setting(
        True, help="Min-K% membership AUC of forget vs holdoutNN and privleak (needs holdoutNN).")
    rouge_stemmer: bool = setting(
        True, help="Porter-stem words before ROUGE-L, as rouge-score's use_stemmer=True (needs nltk).")

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")
        check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")


@dataclass
class Item:
    """One TOFU question: the asked question, its answer, the paraphrased answer (forget and
    retain sets) and the perturbed (wrong) answers."""

    question: str
    answer: str
    paraphrased: Optional[str]
    perturbed: list[str]


@dataclass
class TofuData:
    sets: dict[str, list[Item]]  # forget, retain, ra, wf
    holdout: Optional[list[Item]]


SETS = {"forget": None, "retain": "retain_perturbed", "ra": "real_authors_perturbed",
        "wf": "world_facts_perturbed"}


def read_set(path: Optional[str], config: str, paraphrased: bool, question_key: str,
             limit: Optional[int], perturbed: bool = True) -> list[Item]:
    """The items of one TOFU config, checked: a missing or mistyped field is one line naming the
    file, the row and the field."""
    out: list[Item] = []
    for where, rec in tofu_rows(path, config, "eval.benchmarks.tofu.path"):
        out.append(Item(
            string_field(rec, question_key if paraphrased else "question", where),
            string_field(rec, "answer", where),
            string_field(rec, "paraphrased_answer", where) if paraphrased else None,
            answer_list(rec, "perturbed_answer", where) if perturbed else [],
        ))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise UnlearnError(f"eval.benchmarks.tofu: TOFU config '{config}' has no rows")
    return out


# ---- one model --------------------------------------------------------------------------------------

def answer_nlls(probe: Any, items: Sequence[Item]) -> tuple[list[float], list[Optional[float]], list[list[float]]]:
    """Mean NLL per token of each item's answer, paraphrased answer and perturbed answers (one
    batched teacher-forced pass over all of them)."""
    prompts: list[str] = []
    answers: list[str] = []
    for it in items:
        for a in [it.answer, *([it.paraphrased] if it.paraphrased is not None else []), *it.perturbed]:
            prompts.append(it.question)
            answers.append(a)
    nll = [s.mean_nll for s in probe.answer_scores(prompts, answers)]
    ans: list[float] = []
    para: list[Optional[float]] = []
    pert: list[list[float]] = []
    i = 0
    for it in items:
        ans.append(nll[i])
        i += 1
        if it.paraphrased is not None:
            para.append(nll[i])
            i += 1
        else:
            para.append(None)
        pert.append(nll[i:i + len(it.perturbed)])
        i += len(it.perturbed)
    return ans, para, pert


def set_metrics(name: str, items: Sequence[Item], nlls: tuple, outputs: Sequence[str], stem: bool) -> dict[str, Metric]:
    """The Probability, ROUGE and Truth Ratio of one set from its answers' NLLs and the outputs."""
    from unlearn.evaluate.metrics.text import rouge_l_recall

    ans, para, pert = nlls
    out: dict[str, Metric] = {}
    probs = [math.exp(-n) for n in ans]
    if name in ("ra", "wf"):
        normed = [normalised_probability(a, p) for a, p in zip(ans, pert)]
        out[f"{name}_Q_A_Prob_normalised"] = Metric(mean(normed), normed)
        correct = ans
    else:
        out[f"{name}_Q_A_Prob"] = Metric(mean(probs), probs)
        correct = para
    rouge = rouge_l_recall(outputs, [it.answer for it in items], stem=stem)
    out[f"{name}_Q_A_ROUGE"] = rouge
    ratios = [truth_ratio(c, p) for c, p in zip(correct, pert)]
    # per_example keeps the raw ratios: forget_quality tests their distribution
    if name == "forget":
        out["forget_truth_ratio"] = Metric(closer_to_one(ratios), ratios)
    else:
        out[f"{name}_Truth_Ratio"] = Metric(true_better(ratios), ratios)
    return out


def min_k_auc(probe: Any, members: Sequence[Item], nonmembers: Sequence[Item]) -> float:
    """AUC of Min-K% (k = 0.4) scores telling the forget set from the holdout set (unlearn.auditing.
    membership, whose Min-K% and AUC are open-unlearning's; 1: forget much likelier)."""
    from unlearn.auditing.membership import auc, mia_scores

    def scores(items: Sequence[Item]) -> list[float]:
        answers = [it.answer for it in items]
        return mia_scores(probe.token_stats([it.question for it in items], answers), answers, k=MIN_K)["min_k"]

    return auc(scores(members), scores(nonmembers))


def _require(module: str, what: str, key: str, where: Any, instead: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise UnlearnError(f"{where(key)}: {key}: {what} needs the {module} package (pip install {module}; "
                           f"or {instead})")


# ---- the benchmark ------------------------------------------------------------------------------------

def _m(name: str, unit: str, better: Optional[str], description: str, source: str) -> BenchMetric:
    return BenchMetric(name, unit, better, description, UPSTREAM + source)


METRICS = (
    _m("forget_quality", "pvalue", HIGHER, "KS-test p-value: forget truth ratios vs the retain model's",
       "privacy.py ks_test"),
    _m("forget_truth_ratio", "score", ONE, "mean min(tr, 1/tr) on the forget set (1: no preference "
       "for the true answer)", "memorization.py truth_ratio closer_to_1_better"),
    _m("forget_Q_A_Prob", "fraction", LOWER, "mean per-token probability of the forget answers",
       "memorization.py probability"),
    _m("forget_Q_A_ROUGE", "fraction", LOWER, "ROUGE-L recall of the forget answers in the outputs",
       "utils.py eval_text_similarity rougeL_recall"),
    _m("model_utility", "score", HIGHER, "harmonic mean of the 9 retain/ra/wf numbers below",
       "utility.py hm_aggregate"),
    _m("privleak", "score", ZERO, "relative gap (%) of the Min-K% AUC to the retain model's (else 0.5)",
       "privacy.py privleak"),
    _m("mia_min_k", "score", None, "Min-K% (k=0.4) AUC, forget vs holdout (1: forget much likelier)",
       "mia/min_k.py, mia/utils.py mia_auc"),
    _m("retain_Q_A_Prob", "fraction", HIGHER, "mean per-token probability of retain answers",
       "memorization.py probability"),
    _m("retain_Q_A_ROUGE", "fraction", HIGHER, "ROUGE-L recall of retain answers",
       "utils.py eval_text_similarity"),
    _m("retain_Truth_Ratio", "score", HIGHER, "mean max(0, 1 - tr) on retain questions",
       "memorization.py truth_ratio true_better"),
    _m("ra_Q_A_Prob_normalised", "fraction", HIGHER, "real authors: the answer's share of probability "
       "among the options", "memorization.py probability_w_options"),
    _m("ra_Q_A_ROUGE", "fraction", HIGHER, "real authors: ROUGE-L recall", "utils.py eval_text_similarity"),
    _m("ra_Truth_Ratio", "score", HIGHER, "real authors: mean max(0, 1 - tr)", "memorization.py truth_ratio"),
    _m("wf_Q_A_Prob_normalised", "fraction", HIGHER, "world facts: the answer's share of probability "
       "among the options", "memorization.py probability_w_options"),
    _m("wf_Q_A_ROUGE", "fraction", HIGHER, "world facts: ROUGE-L recall", "utils.py eval_text_similarity"),
    _m("wf_Truth_Ratio", "score", HIGHER, "world facts: mean max(0, 1 - tr)", "memorization.py truth_ratio"),
)


@register_benchmark(
    "tofu", params=TofuParams, metrics=METRICS,
    description="TOFU: forget fictitious authors' facts (forget quality, model utility), as open-unlearning.",
    source="Maini et al. 2024, arXiv 2401.06121; metrics as locuslab/open-unlearning",
)
class Tofu:
    @staticmethod
    def prepare(params: TofuParams, where: Any) -> TofuData:
        key = "eval.benchmarks.tofu"
        if params.retain_model:
            _require("scipy", "forget_quality (the KS test)", f"{key}.retain_model", where, "leave retain_model unset")
        if params.rouge_stemmer:
            _require("nltk", "ROUGE with stemming", f"{key}.rouge_stemmer", where, "set rouge_stemmer: false")
        sets = {}
        for name, config in SETS.items():
            paraphrased = name in ("forget", "retain")
            sets[name] = read_set(params.path, config or f"{params.forget_split}_perturbed", paraphrased,
                                  params.question_key if paraphrased else "question", params.limit)
        holdout = None
        if params.privleak:
            holdout = read_set(params.path, HOLDOUT_OF[params.forget_split], False, "question", params.limit,
                               perturbed=False)
        return TofuData(sets, holdout)

    @staticmethod
    def measure(probe: Any, data: TofuData, params: TofuParams) -> dict[str, Metric]:
        names = list(data.sets)
        outputs = probe.generate([it.question for n in names for it in data.sets[n]],
                                 max_new_tokens=params.max_new_tokens)
        out: dict[str, Metric] = {}
        start = 0
        for name in names:
            items = data.sets[name]
            out.update(set_metrics(name, items, answer_nlls(probe, items), outputs[start:start + len(items)],
                                   params.rouge_stemmer))
            start += len(items)
        parts = [out[k].value for k in UTILITY]
        out["model_utility"] = Metric(harmonic_mean(parts), [], {"of": dict(zip(UTILITY, parts))})
        if data.holdout is not None:
            out["mia_min_k"] = Metric(min_k_auc(probe, data.sets["forget"], data.holdout), [])
        return out

    @staticmethod
    def models(params: TofuParams) -> dict[str, str]:
        return {RETAIN: params.retain_model} if params.retain_model else {}

    @staticmethod
    def summarize(by_model: dict[str, dict[str, Metric]], data: TofuData, params: TofuParams) -> None:
        ref = by_model.get(RETAIN)
        for label, ms in by_model.items():
            if label == RETAIN:
                continue
            if ref is not None:
                ms["forget_quality"] = Metric(ks_pvalue(ms["forget_truth_ratio"].per_example,
                                                        ref["forget_truth_ratio"].per_example), [])
            if "mia_min_k" in ms:
                ref_auc = ref["mia_min_k"].value if ref is not None else 0.5
                ms["privleak"] = Metric(privleak(ms["mia_min_k"].value, ref_auc), [], {"reference_auc": ref_auc})

