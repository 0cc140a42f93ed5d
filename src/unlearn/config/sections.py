"""The config's sections for the model, the data and the training loop (see unlearn.config).

Each is a dataclass whose fields carry a help text; __post_init__ checks the values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

from unlearn.config.fields import check, setting

# --------------------------------------------------------------------------------------------
# Sections


@dataclass
class LoraConfig:
    """Low-rank adapters (peft). `model.lora: null` means full fine-tuning."""

    r: int = setting(8, help="Rank of the LoRA update matrices.")
    alpha: float = setting(16.0, help="LoRA scaling numerator: the update is scaled by alpha / r.")
    dropout: float = setting(0.0, help="Dropout on the LoRA branch during training.")
    target_modules: Union[list[str], str] = setting(
        "all-linear",
        help="Module names to adapt, e.g. [q_proj, v_proj]; 'all-linear' adapts every linear layer "
        "except the output head.",
    )

    def __post_init__(self) -> None:
        check(self.r >= 1, "r", f"must be >= 1, got {self.r}")
        check(self.alpha > 0, "alpha", f"must be > 0, got {self.alpha}")
        check(0.0 <= self.dropout < 1.0, "dropout", f"must be in [0, 1), got {self.dropout}")
        check(bool(self.target_modules), "target_modules", "must name at least one module")


@dataclass
class ModelConfig:
    """The model to unlearn from."""

    name: str = setting(
        help="A local folder, a Hugging Face hub id, or a built-in alias: smollm2-135m (the bundled "
        "SmolLM2-135M-Instruct), tiny-random-llama, tiny-random-opt."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = setting(
        "float32", help="Dtype the weights are loaded and trained in."
    )
    lora: Union[LoraConfig, None] = setting(None, help="LoRA settings; null trains all weights.")
    merge: bool = setting(
        False,
        help="With LoRA: save the merged full model in OUTPUT_DIR/model (the adapter goes to "
        "OUTPUT_DIR/adapter). Without it, OUTPUT_DIR/model holds the adapter only.",
    )
    revision: Union[str, None] = setting(None, help="Hub revision (branch, tag or commit) to load.")
    tokenizer: Union[str, None] = setting(
        None,
        help="Where the tokenizer comes from when the model's folder or repository has none (a folder, "
        "hub id or alias; MUSE's models use meta-llama/Llama-2-7b-hf's). null: the model's own.",
    )
    trust_remote_code: bool = setting(
        False, help="Allow model code from the model's repository to run. Off unless you trust it."
    )
    allow_pickle: bool = setting(
        False, help="Allow loading weights from pickle-based files (.bin/.pt). Off: safetensors only."
    )

    def __post_init__(self) -> None:
        check(bool(self.name and self.name.strip()), "name", "must not be empty")


@dataclass
class SourceConfig:
    """Where a set of examples comes from."""

    path: Union[str, None] = setting(
        None,
        help="A .jsonl, .json, .csv or .parquet file, or a local Hugging Face dataset folder.",
    )
    dataset: Union[str, None] = setting(
        None, help="A named dataset adapter (see `unlearn datasets`); `path` then points at a local copy."
    )
    split: Union[str, None] = setting(None, help="Split to use for dataset folders and adapters.")
    prompt_field: str = setting("prompt", help="Name of the field holding the prompt.")
    response_field: str = setting("response", help="Name of the field holding the response.")
    limit: Union[int, None] = setting(None, help="Use only the first N examples.")
    passage_words: int = setting(
        128,
        help="dataset: text: words per passage (a passage ends early at a paragraph break once half "
        "full).",
    )
    prompt_words: int = setting(
        16,
        help="dataset: text: leading words of each passage that form the prompt; the rest is the "
        "response.",
    )

    def __post_init__(self) -> None:
        check(self.limit is None or self.limit >= 1, "limit", f"must be >= 1, got {self.limit}")
        check(self.prompt_words >= 1, "prompt_words", f"must be >= 1, got {self.prompt_words}")
        check(
            self.passage_words > self.prompt_words,
            "passage_words",
            f"must be more than prompt_words ({self.prompt_words}), got {self.passage_words}",
        )
        check(
            self.prompt_field != self.response_field,
            "response_field",
            f"must differ from prompt_field (both are '{self.prompt_field}')",
        )

    def describe(self) -> str:
        return self.path or self.dataset or "(inline)"


@dataclass
class ForgetSourceConfig(SourceConfig):
    """The examples to unlearn: a source whose examples eval.split cuts into parts by group."""

    group_field: Union[str, None] = setting(
        None,
        help="A record field (e.g. a person or a book) whose equal values keep examples in the same "
        "part of eval.split, so no forget_test group was trained on. Examples with the same prompt "
        "(ignoring case and spacing) share a part in any case. Every record must have it.",
    )


@dataclass
class MismatchConfig(SourceConfig):
    """The pool of random responses for the mismatch term (paper: L_rdn)."""

    k: int = setting(5, help="Random responses drawn per forget example, fresh each step.")
    responses: Union[list[str], None] = setting(
        None,
        help="Inline list of responses (e.g. templated refusals, the paper's section 9.2). When "
        "neither this nor path/dataset is set, the pool is the retain responses.",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 1, "k", f"must be >= 1, got {self.k}")
        if self.responses is not None:
            check(len(self.responses) > 0, "responses", "must not be an empty list")
            check(all(r.strip() for r in self.responses), "responses", "must not contain empty strings")


@dataclass
class DataConfig:
    """Examples, how they are rendered, and how long they may be."""

    template: str = setting(
        "qa",
        help="'qa' (### Question: {prompt}\\n### Answer: {response}), 'chat' (the tokenizer's chat "
        "template), or a format string containing {prompt} before {response}.",
    )
    forget: Union[ForgetSourceConfig, None] = setting(None, help="The examples to unlearn (negative samples).")
    retain: Union[SourceConfig, None] = setting(
        None, help="Normal data in the same format, kept close to the original model."
    )
    mismatch: MismatchConfig = setting(help="Source of random responses.", factory=MismatchConfig)
    max_length: int = setting(
        512,
        help="Longest sequence in tokens. Longer examples lose prompt tokens from the left; the "
        "response is kept.",
    )
    add_eos: bool = setting(True, help="Append the EOS token to every response (and train on it).")
    refusals: Union[list[str], None] = setting(
        None,
        help="Refusal replies for the idk and dpo terms (one drawn per forget example each step). "
        "null: a built-in list of ten.",
    )

    def __post_init__(self) -> None:
        check(self.max_length >= 8, "max_length", f"must be >= 8, got {self.max_length}")
        if self.refusals is not None:
            check(len(self.refusals) > 0, "refusals", "must not be an empty list")
            check(all(r.strip() for r in self.refusals), "refusals", "must not contain empty strings")
        t = self.template
        if t not in ("qa", "chat"):
            check(
                "{prompt}" in t and "{response}" in t,
                "template",
                "must be 'qa', 'chat', or a format string with {prompt} and {response}",
            )
            check(
                t.index("{prompt}") < t.index("{response}"),
                "template",
                "{prompt} must come before {response}",
            )


@dataclass
class TrainConfig:
    """The optimisation loop."""

    lr: Union[float, None] = setting(
        None,
        help="Peak learning rate. Default: 2e-6 for full fine-tuning (the paper's OPT-1.3B setting), "
        "1e-4 with LoRA.",
    )
    batch_size: int = setting(2, help="Forget (and retain) examples per micro-batch, per process.")
    grad_accum: int = setting(1, help="Micro-batches accumulated per optimizer step.")
    max_steps: int = setting(1000, help="Optimizer steps to run (an upper bound when a stopping rule is set).")
    scheduler: Literal["linear", "cosine", "constant"] = setting(
        "linear", help="Learning-rate schedule after warmup."
    )
    warmup_steps: int = setting(0, help="Linear warmup steps.")
    weight_decay: float = setting(0.0, help="AdamW weight decay.")
    betas: list[float] = setting(help="AdamW betas.", factory=lambda: [0.9, 0.999])
    max_grad_norm: Union[float, None] = setting(1.0, help="Clip the gradient norm to this; null: no clipping.")
    mixed_precision: Literal["no", "bf16", "fp16"] = setting(
        "no", help="Autocast the forward pass (accelerate). fp16 needs a GPU."
    )
    gradient_checkpointing: bool = setting(False, help="Recompute activations to save memory.")
    keep_dropout: bool = setting(
        False,
        help="Keep the model's own dropout (its config's attention/hidden dropout, e.g. OPT's 0.1) "
        "while training. false: off, as TRL does, so the policy equals the frozen original at step "
        "0 (KL 0, NPO/DPO log-ratios 0). LoRA's dropout is model.lora.dropout, unaffected.",
    )
    pack_rows: bool = setting(
        True,
        help="Pack a step's short rows (mismatch answers, retain examples) side by side into rows as "
        "long as the longest, with per-row positions and a block-diagonal attention mask, instead of "
        "padding each row: same losses, fewer tokens. Checked once against the unpacked forward; a "
        "model where it differs runs unpacked.",
    )
    device: Literal["auto", "cpu", "cuda"] = setting("auto", help="Where to train; auto picks a GPU if present.")
    log_every: int = setting(
        1,
        help="Steps between lines in train_log.jsonl and progress updates; a line averages its steps "
        "(tokens and seconds summed). The last step, checkpoints, evaluations, stops and skipped steps "
        "always get a line.",
    )
    save_every: int = setting(0, help="Steps between resumable checkpoints; 0: none.")
    keep_last: int = setting(2, help="Checkpoints kept on disk (older ones are deleted).")
    stop_forget_nll: Union[float, None] = setting(
        None,
        help="Stopping rule: once the forget NLL per token exceeds this, keep going for continue_factor "
        "times the steps it took to get there, then stop. null: run max_steps.",
    )
    continue_factor: float = setting(
        3.0, help="The paper advises 3-5x more steps after the forget loss jumps."
    )
    max_nonfinite: int = setting(
        3,
        help="Stop after this many optimizer steps in a row with a non-finite loss term or gradient "
        "(each such step is skipped; the error names the term).",
    )
    eval_every: int = setting(
        0,
        help="Steps between fast evaluations during training (a few eval prompts: leak rate, retain "
        "accuracy, forget/retain NLL; see eval.fast_examples), logged under 'eval' in train_log.jsonl. "
        "0: none.",
    )
    keep_best: bool = setting(
        False,
        help="With eval_every: keep the model of the evaluation with the best eval.trade_off score in "
        "OUTPUT_DIR/best/model (LoRA: the adapter); OUTPUT_DIR/model stays the final model. A "
        "collapsed model (eval.verdict's rule on the normal and retain prompts) is never kept; with "
        "stop_when_forgotten, neither is one whose utility eval.verdict calls lost.",
    )
    stop_when_forgotten: bool = setting(
        False,
        help="With eval_every: stop at the first evaluation where every forget rate (leak, harmful, "
        "hallucination rate on the val part of the forget data, else the forget set) is at most "
        "eval.verdict.forget_target while utility holds by eval.verdict's rules (retain accuracy and "
        "normal-prompt cosine against the original model's, no collapse), all on the fast prompts.",
    )

    def __post_init__(self) -> None:
        check(self.lr is None or self.lr > 0, "lr", f"must be > 0, got {self.lr}")
        check(self.batch_size >= 1, "batch_size", f"must be >= 1, got {self.batch_size}")
        check(self.grad_accum >= 1, "grad_accum", f"must be >= 1, got {self.grad_accum}")
        check(self.max_steps >= 1, "max_steps", f"must be >= 1, got {self.max_steps}")
        check(self.warmup_steps >= 0, "warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(self.weight_decay >= 0, "weight_decay", f"must be >= 0, got {self.weight_decay}")
        check(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "betas",
            f"must be two numbers in [0, 1), got {self.betas}",
        )
        check(
            self.max_grad_norm is None or self.max_grad_norm > 0,
            "max_grad_norm",
            f"must be > 0 or null, got {self.max_grad_norm}",
        )
        check(self.log_every >= 1, "log_every", f"must be >= 1, got {self.log_every}")
        check(self.save_every >= 0, "save_every", f"must be >= 0, got {self.save_every}")
        check(self.keep_last >= 1, "keep_last", f"must be >= 1, got {self.keep_last}")
        check(
            self.continue_factor >= 0, "continue_factor", f"must be >= 0, got {self.continue_factor}"
        )
        check(self.max_nonfinite >= 1, "max_nonfinite", f"must be >= 1, got {self.max_nonfinite}")
        check(self.eval_every >= 0, "eval_every", f"must be >= 0, got {self.eval_every}")
        check(
            not self.keep_best or self.eval_every > 0,
            "keep_best",
            "needs train.eval_every > 0 (the best model is chosen at each evaluation)",
        )
        check(
            not self.stop_when_forgotten or self.eval_every > 0,
            "stop_when_forgotten",
            "needs train.eval_every > 0 (the rule is checked at each evaluation)",
        )
