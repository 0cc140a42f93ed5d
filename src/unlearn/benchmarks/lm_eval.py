"""Utility through lm-evaluation-harness: its tasks (MMLU, ARC, HellaSwag, a local task of your own)
run on the original and the unlearned model, side by side in the report.

    eval:
      benchmarks:
        lm_eval: {tasks: [mmlu, arc_easy], limit: 200, num_fewshot: 0}

`measure` wraps the loaded model and the run's tokenizer in lm-eval's HFLM and calls
`lm_eval.simple_evaluate` (Gao et al., "A framework for few-shot language model evaluation", 2023;
Biderman et al. 2024, arXiv 2405.14782), as open-unlearning's LMEvalEvaluator does
(src/evals/lm_eval.py). Each task's metrics become rows named TASK/METRIC (TASK/FILTER/METRIC when
the task's filter is not "none", e.g. gsm8k/strict-match/exact_match); their standard errors and the
number of examples go into the row's "detail" in metrics.json. A group that aggregates its subtasks
(mmlu) is reported as the group alone, as open-unlearning does; a tag (ai2_arc) as its tasks.

Offline: a task YAML in `include_path` with `dataset_path: json` and
`dataset_kwargs: {data_files: {test: rows.jsonl}}` reads a local file; a hub task reads the
datasets cache (HF_DATASETS_OFFLINE=1 stops any download). Every task is built (its data read)
before any model loads, so a missing file or an uncached dataset stops the run there.

lm-eval is an optional extra: pip install 'unlearn[lmeval]'.
"""

from __future__ import annotations

import logging
import math
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

from unlearn.benchmarks.registry import HIGHER, LOWER, BenchMetric, register_benchmark
from unlearn.config import check, setting
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics.registry import Metric

KEY = "eval.benchmarks.lm_eval"
HARNESS = "lm-eval (Gao et al. 2023; Biderman et al. 2024, arXiv 2405.14782)"


@dataclass
class LmEvalParams:
    tasks: list[str] = setting(help="lm-eval task, group or tag names (mmlu, arc_easy, ...), or tasks "
                               "defined in include_path")
    limit: Optional[Union[int, float]] = setting(
        None, help="examples per task: a count, or a fraction of the task below 1 (lm-eval's --limit); "
        "default: all")
    num_fewshot: Optional[int] = setting(None, help="few-shot examples per prompt; default: each task's own (0 if none)")
    include_path: str = setting("", help="a folder of task YAML files (local tasks: dataset_path: json, "
                                "dataset_kwargs: {data_files: ...})")
    batch_size: Optional[int] = setting(None, help="lm-eval's batch size; default: eval.batch_size")
    metrics: list[str] = setting(factory=list, help="lm-eval metrics to report (acc, acc_norm, exact_match, "
                                 "...); default: every numeric metric each task returns")
    apply_chat_template: bool = setting(False, help="render prompts with the tokenizer's chat template "
                                        "(lm-eval's --apply_chat_template; open-unlearning's default: false)")

    def __post_init__(self) -> None:
        check(bool(self.tasks), "tasks", "name at least one lm-eval task")
        check(self.limit is None or self.limit > 0, "limit", f"must be above 0, got {self.limit}")
        check(self.num_fewshot is None or self.num_fewshot >= 0, "num_fewshot", "must be 0 or more")
        check(self.batch_size is None or self.batch_size >= 1, "batch_size", "must be 1 or more")


def _acc(name: str, unit: str, better: Optional[str], what: str) -> BenchMetric:
    return BenchMetric(f"*/{name}", unit, better, f"lm-eval's {name}: {what}", HARNESS)


# lm-eval's own metrics (lm_eval/api/metrics.py), each with the direction lm-eval registers for it
# (its higher_is_better; a test checks they agree). A task's metric not listed here is still shown
# (the last pattern), without a direction.
METRICS = (
    _acc("acc", "fraction", HIGHER, "fraction of examples whose correct choice has the highest "
         "log p(choice | prompt), summed over its tokens (a loglikelihood task: the target is the greedy "
         "continuation)"),
    _acc("acc_norm", "fraction", HIGHER, "as acc, each choice's log-likelihood divided by its length in characters"),
    _acc("acc_bytes", "fraction", HIGHER, "as acc, each choice's log-likelihood divided by its length in bytes"),
    _acc("acc_mutual_info", "fraction", HIGHER, "as acc on log p(choice | prompt) - log p(choice)"),
    _acc("acc_all", "fraction", HIGHER, "fraction of questions whose every answer is classified correctly"),
    _acc("exact_match", "fraction", HIGHER, "fraction of generations equal to the target (after the task's filters)"),
    _acc("f1", "score", HIGHER, "F1 of the predicted choices over the task"),
    _acc("mcc", "score", HIGHER, "Matthews correlation of the predicted choices over the task"),
    _acc("brier_score", "score", LOWER, "mean over examples of sum_i (softmax(log-likelihoods)_i - [i = gold])^2"),
    _acc("likelihood", "score", HIGHER, "mean probability of the target continuation"),
    _acc("perplexity", "perplexity", LOWER, "exp(-mean over examples of log p(target | prompt))"),
    _acc("word_perplexity", "perplexity", LOWER, "exp(-sum log p(document) / sum words)"),
    _acc("byte_perplexity", "perplexity", LOWER, "exp(-sum log p(document) / sum bytes)"),
    _acc("bits_per_byte", "score", LOWER, "-sum log p(document) / (sum bytes * ln 2)"),
    _acc("bleu", "bleu", HIGHER, "corpus BLEU of the generations (sacrebleu)"),
    _acc("chrf", "bleu", HIGHER, "corpus chrF of the generations (sacrebleu)"),
    _acc("chrf++", "bleu", HIGHER, "corpus chrF++ (chrF with word bigrams) of the generations (sacrebleu)"),
    _acc("ter", "score", LOWER, "corpus translation edit rate of the generations (sacrebleu)"),
    BenchMetric("*", "score", None, "a metric the task defines (lm-eval's name; see the task's YAML)", HARNESS),
)


@dataclass
class Prepared:
    manager: Any  # lm-eval's TaskManager, its task index built once for both models


@register_benchmark(
    "lm_eval", params=LmEvalParams, metrics=METRICS, extra="lmeval",
    description="Utility: lm-evaluation-harness tasks (their own prompts, few-shot examples and metrics) "
    "on each model.",
    source="lm-evaluation-harness (Gao et al. 2023; Biderman et al. 2024, arXiv 2405.14782), through "
    "simple_evaluate as in open-unlearning's LMEvalEvaluator",
)
class LmEval:
    @staticmethod
    def prepare(params: LmEvalParams, where: Callable[[str], str]) -> Prepared:
        """Find every task (the local folder alone when it defines them all: lm-eval's own index
        takes seconds to build) and build it, reading its data, before any model loads."""
        _harness(where)
        from lm_eval.tasks import TaskManager

        inc = params.include_path
        if inc and not Path(inc).is_dir():
            raise UnlearnError(f"{where(KEY + '.include_path')}: {KEY}.include_path: {inc} is not a folder")
        manager = None
        if inc:
            local = TaskManager(include_path=inc, include_defaults=False)
            if all(_defined_in(local.task_index, name) for name in params.tasks):
                manager = local
        manager = manager or TaskManager(include_path=inc or None)
        available: set[str] = set()
        with _quiet():
            for name in params.tasks:
                if name not in manager.task_index and not _yaml_file(name):
                    raise UnlearnError(f"{where(KEY + '.tasks')}: {KEY}.tasks: no lm-eval task, group or tag "
                                       f"'{name}'{_close(name, manager.all_tasks)}")
                try:
                    loaded = manager.load([name])
                except Exception as e:  # lm-eval and datasets raise many kinds: say which task, and what
                    raise UnlearnError(f"{where(KEY + '.tasks')}: {KEY}.tasks: lm-eval task '{name}': "
                                       f"{_one_line(e)}") from e
                for task in loaded["tasks"].values():
                    available |= set(task.higher_is_better())
        for m in params.metrics:
            if m not in available:
                raise UnlearnError(f"{where(KEY + '.metrics')}: {KEY}.metrics: no task of {params.tasks} reports "
                                   f"'{m}'; they report: {', '.join(sorted(available))}")
        return Prepared(manager)

    @staticmethod
    def measure(probe: Any, data: Prepared, params: LmEvalParams) -> dict[str, Metric]:
        """simple_evaluate on probe.model with probe.tokenizer; its results as TASK/METRIC rows."""
        lm_eval = _harness(None)
        from lm_eval.models.huggingface import HFLM

        with _quiet(), _own_rng():
            # HFLM takes the loaded model as it is (device, dtype, weights): nothing is loaded again.
            lm = HFLM(pretrained=probe.model, tokenizer=probe.tokenizer,
                      batch_size=params.batch_size or probe.batch_size)
            try:
                out = lm_eval.simple_evaluate(
                    model=lm, tasks=list(params.tasks), limit=params.limit, num_fewshot=params.num_fewshot,
                    task_manager=data.manager, apply_chat_template=params.apply_chat_template, log_samples=False,
                )
            except Exception as e:
                raise UnlearnError(f"{KEY}: lm-eval on the {probe.label} model: {_one_line(e)}") from e
        return results_to_metrics(out, params.metrics)


def results_to_metrics(out: dict[str, Any], wanted: list[str] | None = None) -> dict[str, Metric]:
    """simple_evaluate's results as rows TASK/METRIC (TASK/FILTER/METRIC for a filter other than
    "none"), each with {"stderr", "n"} in extra["detail"]. `wanted`: these metric names only.
    The subtasks of a group that reports its own aggregate are left out (mmlu: one row per metric)."""
    results, groups = out["results"], out.get("group_subtasks") or {}
    covered: set[str] = set()
    for group in groups:
        if any(_metric_key(k, v) for k, v in results.get(group, {}).items()):
            covered |= _below(group, groups)
    n_samples = out.get("n-samples") or {}
    rows: dict[str, Metric] = {}
    for task, entry in results.items():
        if task in covered:
            continue
        for key, value in entry.items():
            metric, _, filt = key.partition(",")
            if not _metric_key(key, value) or (wanted and metric not in wanted):
                continue
            name = f"{task}/{metric}" if filt == "none" else f"{task}/{filt}/{metric}"
            se = entry.get(f"{metric}_stderr,{filt}")
            detail: dict[str, Any] = {"stderr": float(se) if _number(se) else None}
            if task in n_samples:
                detail["n"] = n_samples[task].get("effective")
            rows[name] = Metric(float(value), [], {"detail": detail})
    return rows


# ---------------------------------------------------------------------------------------------


def _harness(where: Optional[Callable[[str], str]]) -> Any:
    try:
        import lm_eval
    except ImportError:
        at = f"{where(KEY)}: " if where else ""
        raise UnlearnError(f"{at}{KEY} needs lm-evaluation-harness: pip install 'unlearn[lmeval]'") from None
    return lm_eval


def _defined_in(index: dict[str, Any], name: str) -> bool:
    """Whether task/group/tag `name` and every member of it are in `index` (a group in the local
    folder may list lm-eval's own tasks: then lm-eval's whole index is needed)."""
    entry = index.get(name)
    if entry is None:
        return False
    members = (entry.cfg or {}).get("task", []) if entry.kind.name == "GROUP" else []
    for m in members if isinstance(members, list) else [members]:
        child = m if isinstance(m, str) else (m.get("task") or m.get("group")) if isinstance(m, dict) else None
        if not isinstance(child, str) or not _defined_in(index, child):
            return False
    return True


def _yaml_file(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) and Path(name).is_file()  # lm-eval also takes a task file's path


def _close(name: str, known: list[str]) -> str:
    import difflib

    near = difflib.get_close_matches(name, known, n=3, cutoff=0.7)
    return f" (did you mean {', '.join(near)}?)" if near else " (`lm_eval ls tasks` lists lm-eval's own)"


def _below(group: str, groups: dict[str, list[str]]) -> set[str]:
    out: set[str] = set()
    for child in groups.get(group, []):
        out |= {child} | _below(child, groups)
    return out


def _metric_key(key: str, value: Any) -> bool:
    """Whether an entry of lm-eval's results is a metric's value: "acc,none" (metric, filter) with a
    number; not "acc_stderr,none", "alias", "name" or "sample_len"."""
    metric, comma, _ = key.partition(",")
    return bool(comma) and not metric.endswith("_stderr") and _number(value)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or "(no message)"
    return f"{type(e).__name__}: {text[:300]}"


@contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval's info and warnings (a model object passed as `pretrained`, seeds set, ...) off."""
    log = logging.getLogger("lm_eval")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


@contextmanager
def _own_rng() -> Iterator[None]:
    """simple_evaluate seeds Python's, NumPy's and torch's generators (for its few-shot sampling):
    give them back as they were, so that what runs after it draws as it would have."""
    import numpy as np
    import torch

    py, npy = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)
