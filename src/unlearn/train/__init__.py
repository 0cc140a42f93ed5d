"""The training loop of `unlearn run` and `unlearn finetune`, in one place, read top to bottom.

    validate config, output dir, data, model      (nothing is written until all of it passes)
    -> write OUTPUT_DIR/config.yaml and run.json
    -> for each step: micro-batches -> one fused forward -> objective -> backward -> clip -> step
       log a line to train_log.jsonl; checkpoint every save_every; stop on max_steps or the rule
    -> save the model atomically; mark run.json done

Every way out leaves run.json saying how the run ended (see unlearn.runstate): done;
interrupted (SIGINT/SIGTERM: the step is finished, a checkpoint written, RunInterrupted raised);
failed (the reason; the error is re-raised). Under several processes the decisions that end or
skip a step are taken on values all-reduced across ranks, so every rank takes the same one.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
import uuid
import warnings as warnings_
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from unlearn.config import Config
from unlearn.data import Encoder, StepBatcher, TruncationReport, encode_examples, load_source, split_examples
from unlearn.data.batch import FROM_FORGET
from unlearn.data.refusals import REFUSALS
from unlearn.data.checks import data_warnings
from unlearn.distributed import (
    agree, check_engine_options, configure_engine, engine, full_state_dict, make_shardable,
    nonfinite_terms, on_main, reference_forward, sharded, sum_across,
)
from unlearn.errors import RunInterrupted, UnlearnError, one_line
from unlearn.models import Reference, add_lora, load_model, save_model
from unlearn.objective import Objective, ResponseLM, StepContext
from unlearn.files import (
    WRITE_ERRNOS, check_free_space, check_writable, estimate_output_bytes, fsync_path, inside,
    is_write_error, iter_log, refuse_dangerous_overwrite, remove_stale_temps, replace_dir, write_error,
    write_text_atomic,
)
from unlearn.runstate import GracefulStop, Manifest, run_status

DEFAULT_LR_FULL = 2e-6
DEFAULT_LR_LORA = 1e-4


@dataclass
class RunResult:
    output_dir: Path
    steps: int
    stop_reason: str
    seconds: float
    model_dir: Path
    last: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Files


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def check_output_dir(path: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a previous run; check that the folder can be created. Writes nothing."""
    if path.exists():
        if not path.is_dir():
            raise UnlearnError(f"output_dir '{path}' exists and is a file")
        if resume:
            if not (path / "config.yaml").exists():
                raise UnlearnError(f"--resume: '{path}' holds no run (no config.yaml)")
            # A resumed run writes into what is there: a planted symlink must not lead elsewhere.
            for name in ("config.yaml", "run.json", "train_log.jsonl", "checkpoints", "model", "adapter"):
                inside(path, name)
        elif any(path.iterdir()) and not overwrite:
            raise UnlearnError(
                f"output_dir '{path}' exists and is not empty; pass --overwrite to replace it "
                "or --resume to continue it"
            )
    elif resume:
        raise UnlearnError(f"--resume: output_dir '{path}' does not exist")
    check_writable(path)


# --------------------------------------------------------------------------------------------
# Checkpoints: safetensors + JSON, no pickles


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return tensors, meta


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    v, state, gauss = meta["python"]
    random.setstate((v, tuple(state), gauss))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def save_checkpoint(
    folder: Path, step: int, model: Any, optimizer: Any, scheduler: Any, keep_last: int,
    data: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoints/step-N atomically (a temp folder, flushed to disk, renamed into place).

    A failed write (full disk) removes the temp folder, keeps the older checkpoints and raises an
    UnlearnError. `data` records the data position (the batches are a pure function of the seed
    and the micro-batch index, so the position is all the sampler state there is).
    """
    root = inside(folder, "checkpoints")
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{uuid.uuid4().hex[:8]}"
    try:
        _write_checkpoint(tmp, step, model, optimizer, scheduler, data)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_write_error(e):
            raise write_error(f"checkpoint {final.name}", e) from None
        raise
    replace_dir(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write_checkpoint(
    tmp: Path, step: int, model: Any, optimizer: Any, scheduler: Any, data: dict[str, Any] | None
) -> None:
    from safetensors.torch import save_file

    tmp.mkdir()
    trainable = {n: p.detach().contiguous().cpu() for n, p in model.named_parameters() if p.requires_grad}
    save_file(trainable, tmp / "trainable.safetensors")
    opt = optimizer.state_dict()
    opt_tensors, opt_meta = {}, {}
    for idx, st in opt["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                opt_tensors[f"{idx}.{k}"] = v.detach().contiguous().cpu()
            else:
                opt_meta[f"{idx}.{k}"] = v
    save_file(opt_tensors, tmp / "optimizer.safetensors")
    rng_tensors, rng_meta = _rng_state()
    save_file(rng_tensors, tmp / "rng.safetensors")
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    write_json_atomic(
        tmp / "state.json",
        {"step": step, "param_groups": opt["param_groups"], "optimizer_scalars": opt_meta,
         "scheduler": sched, "rng": rng_meta, "data": data or {}},
    )
    for f in tmp.iterdir():
        fsync_path(f)
    fsync_path(tmp)


def latest_checkpoint(folder: Path) -> Path | None:
    done = [p for p in sorted((folder / "checkpoints").glob("step-*")) if (p / "state.json").exists()]
    return done[-1] if done else None


def load_checkpoint(
    path: Path, model: Any, optimizer: Any, scheduler: Any, data: dict[str, Any] | None = None
) -> int:
    """Restore weights, optimizer, scheduler and RNG from a checkpoint; return its step. `data`:
    this run's data position keys, which must match the checkpoint's (same global batch)."""
    from safetensors.torch import load_file

    try:
        state = json.loads((path / "state.json").read_text())
        trainable = load_file(path / "trainable.safetensors")
        opt_tensors = load_file(path / "optimizer.safetensors")
        rng_tensors = load_file(path / "rng.safetensors")
    except Exception as e:  # a damaged disk: JSONDecodeError, SafetensorError, OSError
        raise UnlearnError(
            f"checkpoint {path} cannot be read ({one_line(e)}); delete it to resume from the one before"
        ) from None
    saved_data = state.get("data") or {}
    for key, ours in (data or {}).items():
        if key in saved_data and key != "micro_batch_index" and saved_data[key] != ours:
            raise UnlearnError(
                f"--resume: checkpoint {path.name} was written with {key} {saved_data[key]}, this run "
                f"has {ours} (train.batch_size x processes must stay the same)"
            )
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(params) - set(trainable))
    if missing:
        raise UnlearnError(f"{path}: checkpoint lacks trained parameter '{missing[0]}' of this model")
    with torch.no_grad():
        for n, t in trainable.items():
            if n not in params:
                raise UnlearnError(f"{path}: checkpoint has parameter '{n}' that this model lacks")
            if tuple(t.shape) != tuple(params[n].shape):
                raise UnlearnError(
                    f"{path}: parameter '{n}' has shape {tuple(t.shape)} in the checkpoint, "
                    f"{tuple(params[n].shape)} in this model"
                )
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    opt_state: dict[int, dict[str, Any]] = {}
    for key, v in list(opt_tensors.items()) + list(state["optimizer_scalars"].items()):
        idx, _, name = key.partition(".")
        opt_state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    # LambdaLR keeps its lambdas out of the checkpoint (functions): they come from the config.
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    _set_rng_state(rng_tensors, state["rng"])
    return int(state["step"])


# --------------------------------------------------------------------------------------------
# Stopping rule


class ForgetNllStop:
    """Stop once the forget NLL per token has exceeded `threshold` and stayed above it for a further
    `factor` x the steps it took to get there (the paper: keep unlearning 3-5x longer after the
    forget loss jumps). Dropping back below the threshold restarts the count."""

    def __init__(self, threshold: float, factor: float):
        self.threshold, self.factor = threshold, factor
        self.crossed_at: int | None = None

    def update(self, step: int, forget_nll: float) -> bool:
        if forget_nll > self.threshold:
            if self.crossed_at is None:
                self.crossed_at = step
            return step >= self.crossed_at + math.ceil(self.factor * self.crossed_at)
        self.crossed_at = None
        return False


# --------------------------------------------------------------------------------------------
# Progress


class Progress:
    """A rich progress bar with each term's value on a terminal; a plain line now and then elsewhere."""

    def __init__(self, console: Any, total: int, start: int, title: str):
        self.console, self.total = console, total
        self.every = max(1, total // 20)
        self.bar = None
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[terms]}"), console=console, transient=False,
            )
            self.task = self.bar.add_task(title, total=total, completed=start, terms="")
            self.bar.start()

    def update(self, step: int, values: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.3f}" for k, v in values.items())
        if self.bar is not None:
            self.bar.update(self.task, completed=step, terms=shown)
        elif step % self.every == 0 or step == self.total:
            self.console.print(f"step {step}/{self.total}  {shown}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


# --------------------------------------------------------------------------------------------
# The run


def make_optimizer(params: list[torch.nn.Parameter], train_cfg: Any, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with the config's settings. fused=None: torch's fused kernel wherever it has one for
    these parameters (CPU and CUDA). It makes one pass over each tensor where the default makes a
    dozen: several times faster for a full fine-tune on a CPU (docs/performance.md)."""
    if fused is None:
        fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(
        params, lr=train_cfg.lr, betas=tuple(train_cfg.betas), weight_decay=train_cfg.weight_decay,
        fused=fused or None,
    )


def _pool(cfg: Config, retain_examples: list | None) -> list[str]:
    m = cfg.data.mismatch
    if m.responses:
        return list(m.responses)
    if m.path or m.dataset:
        return [e.response for e in load_source(m, "mismatch")]
    if not retain_examples:
        raise UnlearnError(
            f"{cfg.origin('objective')}: the mismatch term needs a pool of random responses: set "
            "data.retain (the default pool), data.mismatch.path or data.mismatch.responses"
        )
    return [e.response for e in retain_examples]


@dataclass
class _Exit:
    """What the exit paths of a run need; filled in by _train as the run goes."""

    manifest: Manifest | None = None
    stop: GracefulStop | None = None
    out: Path | None = None
    step: int = 0


def train(
    cfg: Config,
    *,
    overwrite: bool = False,
    resume: bool = False,
    finetune: bool = False,
    console: Any = None,
    evaluator: Callable[[Any, Any, int], dict[str, float]] | None = None,
) -> RunResult:
    """Run `unlearn run` (or `unlearn finetune` with finetune=True) for a loaded Config.

    evaluator(model, tokenizer, step) -> {metric: value, 'score': value} runs every
    train.eval_every steps (unlearn.run passes unlearn.evaluate.during.TrainingEvaluator).

    Raises UnlearnError for bad input (nothing written) and for a run that fails (run.json says
    `failed` and why), RunInterrupted after SIGINT/SIGTERM (run.json says `interrupted`).
    """
    ex = _Exit()
    try:
        return _train(cfg, ex, overwrite=overwrite, resume=resume, finetune=finetune, console=console,
                      evaluator=evaluator)
    except RunInterrupted:
        raise
    except KeyboardInterrupt:
        if ex.manifest is not None:
            ex.manifest.end("interrupted", steps=ex.step, reason="KeyboardInterrupt (no checkpoint written)",
                            last_checkpoint=_latest(ex.out))
        raise
    except BaseException as e:
        err = e
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:
            err = write_error(f"to {ex.out or cfg.output_dir}", e)
        if ex.manifest is not None:
            ex.manifest.end("failed", steps=ex.step, reason=one_line(err), last_checkpoint=_latest(ex.out))
        if err is not e:
            raise err from None
        raise
    finally:
        if ex.stop is not None:
            ex.stop.restore()


def _latest(out: Path | None) -> str | None:
    ckpt = latest_checkpoint(out) if out is not None else None
    return str(ckpt) if ckpt is not None else None


def _train(
    cfg: Config,
    ex: _Exit,
    *,
    overwrite: bool,
    resume: bool,
    finetune: bool,
    console: Any,
    evaluator: Callable[[Any, Any, int], dict[str, float]] | None,
) -> RunResult:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from rich.console import Console
    from transformers import get_scheduler

    console = console or Console(stderr=True)
    t_start = time.time()

    # ---- 1. validate everything; write nothing -------------------------------------------
    if finetune:
        cfg.objective = {"nll": 1.0}
    objective = Objective(cfg.objective, where=cfg.origin)
    out = Path(cfg.output_dir).expanduser().resolve()
    check_output_dir(out, overwrite=overwrite, resume=resume)
    if resume:
        _check_resume_config(out, cfg)
        if run_status(out) == "done" and latest_checkpoint(out) is None:
            raise UnlearnError(
                f"--resume: the run in '{out}' finished and left no checkpoint to continue from "
                "(train.save_every: 0); start again with --overwrite"
            )
    elif overwrite and out.exists():
        refuse_dangerous_overwrite(out, run_inputs(cfg))

    segments = objective.segments
    need_forget = any(s in FROM_FORGET for s in segments)
    forget = load_source(cfg.data.forget, "forget") if cfg.data.forget else None
    if forget and cfg.eval.split and not finetune:  # unlearn the train part; val/test are held out
        forget = split_examples(forget, cfg.eval.split, cfg.seed)[0]
    if cfg.train.eval_every and evaluator is None:
        raise UnlearnError(
            f"{cfg.origin('train.eval_every')}: train.eval_every needs an evaluator; use unlearn.run() "
            "or `unlearn run`, which pass one"
        )
    retain = load_source(cfg.data.retain, "retain") if cfg.data.retain else None
    if finetune:
        retain = (forget or []) + (retain or [])
        if not retain:
            raise UnlearnError(f"{cfg.origin('data')}: finetune needs data.forget and/or data.retain")
        forget = None
    for term in objective.terms:
        for seg in term.term.segments:
            data_key = "forget" if seg in FROM_FORGET else "retain"
            if (forget if data_key == "forget" else retain) is None:
                raise UnlearnError(
                    f"{cfg.origin('objective.' + term.term.name)}: objective term "
                    f"'{term.term.name}' needs data.{data_key}, which is not set"
                )
    pool = _pool(cfg, retain) if "mismatch" in segments else []
    if cfg.train.device == "cuda" and not torch.cuda.is_available():
        raise UnlearnError(f"{cfg.origin('train.device')}: train.device: cuda, but no GPU is visible")
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UnlearnError(f"{cfg.origin('train.mixed_precision')}: fp16 needs a GPU; use bf16 on CPU")

    set_seed(cfg.seed)
    model, tokenizer = load_model(cfg.model)
    warnings: list[tuple[str, int, str]] = []
    if tokenizer.eos_token_id is None:
        warnings.append(("tokenizer_without_eos", 1, "the tokenizer has no EOS token: responses are "
                         "trained without an end marker (data.add_eos has no effect), padding uses "
                         f"'{tokenizer.pad_token}'"))
    encoder = Encoder(tokenizer, cfg.data.template, cfg.data.max_length, cfg.data.add_eos)
    report = TruncationReport()
    forget_enc = encode_examples(encoder, forget) if forget and need_forget else []
    retain_enc = encode_examples(encoder, retain) if retain and "retain" in segments else []
    for e in forget_enc + retain_enc:
        report.add(e)

    if cfg.model.lora is not None:
        model = add_lora(model, cfg.model.lora)
    else:
        model.requires_grad_(True)
    # Terms such as rmu read a decoder layer's output and train only some layers: resolve them now.
    objective.bind(model)
    objective.restrict_trainable(model)
    if cfg.train.lr is None:
        cfg.train.lr = DEFAULT_LR_LORA if cfg.model.lora is not None else DEFAULT_LR_FULL
    cfg.objective = objective.to_config()

    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        # On a machine without a GPU, `auto` must say cpu: otherwise accelerate ignores the
        # processes torchrun started and each one trains alone (and they overwrite each other).
        cpu=cfg.train.device == "cpu" or (cfg.train.device == "auto" and not torch.cuda.is_available()),
    )
    check_engine_options(accelerator, save_every=cfg.train.save_every, merge=cfg.model.merge,
                         grad_accum=cfg.train.grad_accum, where=cfg.origin)
    global_batch = cfg.train.batch_size * accelerator.num_processes
    warnings += data_warnings(forget if need_forget else None, retain if "retain" in segments else None,
                              global_batch=global_batch)
    if not resume:
        check_free_space(out, *_output_bytes(cfg, model))
    batcher = StepBatcher(
        encoder,
        forget=forget_enc,
        forget_prompts=[e.prompt for e in forget] if forget and need_forget else [],
        retain=retain_enc,
        mismatch_pool=pool,
        refusals=(cfg.data.refusals or REFUSALS) if "refusal" in segments else (),
        segments=segments,
        batch_size=cfg.train.batch_size,
        k=cfg.data.mismatch.k,
        seed=cfg.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
    )

    # ---- 2. the output folder ---------------------------------------------------------------
    main = accelerator.is_main_process
    if main:
        if out.exists() and overwrite and not resume:
            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        if resume:
            remove_stale_temps(out)
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
    ex.out = out
    ex.manifest = Manifest(out / "run.json", main, kind="finetune" if finetune else "unlearn",
                           model=cfg.model.name, output_dir=str(out))
    ex.manifest.update()
    accelerator.wait_for_everyone()

    # ---- 3. model, reference, optimizer -------------------------------------------------------
    if cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train()
    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.mixed_precision)
    policy = ResponseLM(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg.train)
    scheduler = get_scheduler(
        cfg.train.scheduler, optimizer, num_warmup_steps=cfg.train.warmup_steps,
        num_training_steps=cfg.train.max_steps,
    )
    probe = batcher.batch(0)
    if sharded(accelerator):  # once the engine splits the weights, only its wrapper may run them
        policy.check_fast_path(probe.input_ids[:1], probe.attention_mask[:1], probe.labels[:1])
        make_shardable(policy)
    # LoRA: the policy with adapters disabled. Full fine-tune: one frozen copy in compute dtype,
    # taken before the engine shards the policy, then prepared (sharded) like it.
    reference = (
        Reference.build(model, compute_dtype if cfg.model.lora is None else None)
        if objective.needs_reference else None
    )
    configure_engine(accelerator, batch_size=cfg.train.batch_size, max_grad_norm=cfg.train.max_grad_norm)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    inner = accelerator.unwrap_model(policy)
    params = [p for p in inner.parameters() if p.requires_grad]  # FSDP2 replaces them with shards
    if not sharded(accelerator):
        probe = probe.to(accelerator.device)
        inner.check_fast_path(probe.input_ids[:1], probe.attention_mask[:1], probe.labels[:1])
        if cfg.train.pack_rows and not objective.hidden_layers:  # packed rows give no per-row hidden states
            inner.check_packing(probe.input_ids, probe.attention_mask, probe.labels)
    reference_fn = reference_forward(accelerator, policy, inner, reference)

    start_step = 0
    log_path = inside(out, "train_log.jsonl")
    data_position = {"seed": cfg.seed, "global_batch": global_batch, "grad_accum": cfg.train.grad_accum}
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            console.print(f"No complete checkpoint in {out / 'checkpoints'}: starting again from step 0")
        else:
            start_step = load_checkpoint(ckpt, inner.model, optimizer, scheduler, data_position)
            console.print(f"Resuming from {ckpt} (step {start_step})")
        if main:
            _truncate_log(log_path, start_step)

    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in inner.model.parameters())
    manifest = {
        "objective": cfg.objective,
        "examples": {"forget": len(forget or []), "retain": len(retain or []), "mismatch_pool": len(pool)},
        "truncated": {"prompts": report.prompts, "responses": report.responses, "of": report.total},
        "warnings": {key: n for key, n, _ in warnings},
        "trainable_parameters": n_trainable,
        "parameters": n_total,
        "fast_logits": inner.fast,
        "packed_rows": inner.pack,
        "processes": accelerator.num_processes,
        "engine": engine(accelerator),
        "resumed_from": start_step if resume else None,
    }
    ex.manifest.update(**manifest)
    if main:
        _print_plan(console, cfg, manifest, segments)
        for _, _, text in warnings:
            console.print(f"[yellow]warning: {text}[/yellow]")

    # ---- 4. the loop -----------------------------------------------------------------------------
    stopper = (
        ForgetNllStop(cfg.train.stop_forget_nll, cfg.train.continue_factor)
        if cfg.train.stop_forget_nll is not None and "forget" in segments
        else None
    )
    progress = Progress(console, cfg.train.max_steps, start_step, "finetune" if finetune else "unlearn") if main else None
    accum = cfg.train.grad_accum
    nonfinite_run = 0
    stop_reason = "max_steps"
    last: dict[str, float] = {}
    log_file = open(log_path, "a") if main else None
    step = start_step
    best_file = out / "best" / "best.json"
    best = json.loads(best_file.read_text()) if resume and cfg.train.keep_best and best_file.exists() else None
    ex.stop = GracefulStop().install()

    def checkpoint() -> None:
        on_main(accelerator, lambda: save_checkpoint(
            out, step, inner.model, optimizer, scheduler, cfg.train.keep_last,
            {**data_position, "micro_batch_index": step * accum}))

    try:
        while step < cfg.train.max_steps:
            ex.step = step
            t0 = time.time()
            sums: dict[str, float] = {}
            tokens = 0
            bad_terms: list[str] = []
            for micro in range(accum):
                batch = batcher.batch(step * accum + micro).to(accelerator.device)
                tokens += batch.tokens
                sync = accelerator.no_sync(policy) if micro < accum - 1 else nullcontext()
                with sync, accelerator.autocast():
                    ctx = StepContext(
                        policy, batch, reference_fn, objective.reference_segments, objective.hidden_layers
                    )
                    loss, values = objective(ctx)
                    # Decided on every rank's values at once, so that all ranks skip the backward
                    # (and its gradient all-reduce) together; DeepSpeed would step inside it.
                    bad_terms = nonfinite_terms(accelerator, loss, values)
                    if not bad_terms:
                        accelerator.backward(loss / accum)
                if bad_terms:
                    break
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) / accum
                if ctx.has("forget"):
                    sums["forget_nll"] = sums.get("forget_nll", 0.0) + float(ctx.seq_nll("forget").detach().mean()) / accum
            sums, tokens, stop_requested = agree(accelerator, sums, tokens, ex.stop.requested)

            grad_norm = None
            if not bad_terms:
                if cfg.train.max_grad_norm is not None:
                    grad_norm = float(accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm))
                else:
                    grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
                if not math.isfinite(grad_norm) and cfg.train.mixed_precision != "fp16":
                    optimizer.zero_grad(set_to_none=True)
                    culprits = _gradient_culprits(accelerator, objective, inner, reference_fn, batcher,
                                                  range(step * accum, (step + 1) * accum), params)
                    bad_terms = [f"{t} gradient" for t in culprits] or ["gradient"]
            if bad_terms:
                optimizer.zero_grad(set_to_none=True)
                nonfinite_run += 1
                if main:
                    console.print(
                        f"[yellow]step {step + 1}: non-finite {', '.join(bad_terms)}; step skipped "
                        f"({nonfinite_run}/{cfg.train.max_nonfinite} in a row)[/yellow]"
                    )
                if nonfinite_run >= cfg.train.max_nonfinite:
                    stop_reason = f"non-finite {', '.join(bad_terms)} at step {step + 1}"
                    good = latest_checkpoint(out)
                    raise UnlearnError(
                        f"stopped: {stop_reason} ({nonfinite_run} steps in a row, none applied); last good "
                        f"checkpoint: {good if good else 'none (train.save_every: 0)'}; try a lower "
                        "train.lr or train.mixed_precision: no"
                    )
                step += 1
                with warnings_.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
                    warnings_.simplefilter("ignore", UserWarning)
                    scheduler.step()
                if main:
                    log_file.write(json.dumps({"step": step, "skipped": True, "nonfinite": bad_terms}) + "\n")
                    log_file.flush()
                if stop_requested:
                    _interrupt(ex, accelerator, cfg, step, checkpoint, finetune)
                continue
            nonfinite_run = 0
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1

            record = {
                "step": step,
                "loss": sums["loss"],
                **{k: v for k, v in sums.items() if k != "loss"},
                "lr": scheduler.get_last_lr()[0],
                "grad_norm": grad_norm,
                "tokens": tokens,
                "seconds": round(time.time() - t0, 4),
            }
            if evaluator is not None and (step % cfg.train.eval_every == 0 or step == cfg.train.max_steps):
                best = _evaluate(evaluator, inner.model, tokenizer, step, record, best, out, cfg, main)
                accelerator.wait_for_everyone()
            last = record
            if main:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                progress.update(step, {k: v for k, v in sums.items()})
            saved = False
            if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.max_steps:
                checkpoint()
                saved = True
            if stopper is not None and stopper.update(step, sums["forget_nll"]):
                stop_reason = (
                    f"forget NLL above {cfg.train.stop_forget_nll} since step {stopper.crossed_at}"
                )
                break
            if stop_requested and step < cfg.train.max_steps:
                _interrupt(ex, accelerator, cfg, step, None if saved else checkpoint, finetune)
    finally:
        if progress is not None:
            progress.close()
        if log_file is not None:
            log_file.close()
    ex.step = step

    # ---- 5. save -----------------------------------------------------------------------------------
    state_dict = full_state_dict(accelerator, policy)  # FSDP/ZeRO-3: gathered from every rank

    def save() -> dict[str, str]:
        inside(out, "model"), inside(out, "adapter")
        try:
            return save_model(inner.model, tokenizer, out, base_name=cfg.model.name, merge=cfg.model.merge,
                              state_dict=state_dict)
        except Exception as e:
            if is_write_error(e):
                raise write_error(f"the model to {out / 'model'}", e) from None
            raise

    written = on_main(accelerator, save) or {}
    ex.manifest.update(
        status="done", steps=step, stop_reason=stop_reason, seconds=round(time.time() - t_start, 2),
        outputs=written, **({"best": best} if best is not None else {}),
    )
    if main:
        console.print(f"[green]Done[/green] after {step} steps ({stop_reason}). Model: {out / 'model'}")
    accelerator.wait_for_everyone()
    return RunResult(out, step, stop_reason, time.time() - t_start, out / "model", last)


def _evaluate(
    evaluator: Callable, model: Any, tokenizer: Any, step: int, record: dict[str, Any],
    best: dict[str, Any] | None, out: Path, cfg: Config, main: bool,
) -> dict[str, Any] | None:
    """train.eval_every: log the evaluator's values under record['eval']; with train.keep_best save
    the model to OUTPUT_DIR/best/model when the score beats the best so far (ties keep the earlier).
    Runs on the main process only; the model is unwrapped (no DDP hooks)."""
    if not main:
        return best
    values = evaluator(model, tokenizer, step)
    record["eval"] = values
    if cfg.train.keep_best and (best is None or values["score"] > best["score"]):
        (out / "best").mkdir(exist_ok=True)
        # The adapter only for LoRA: merging here would change the model being trained.
        save_model(model, tokenizer, out / "best", base_name=cfg.model.name, merge=False)
        best = {"step": step, **values}
        write_json_atomic(out / "best" / "best.json", best)
    return best


# --------------------------------------------------------------------------------------------
# Helpers of the run: what the loop calls, kept out of it so that it reads top to bottom


def run_inputs(cfg: Config, with_eval: bool = False) -> list[Path]:
    """The files a run reads (with_eval: and its evaluation): --overwrite must not delete them."""
    paths = [cfg.data.forget, cfg.data.retain, cfg.data.mismatch]
    if with_eval:
        paths += [cfg.eval.forget, cfg.eval.forget_test, cfg.eval.retain, cfg.eval.normal]
    found = [Path(s.path) for s in paths if s is not None and s.path]
    if Path(cfg.model.name).expanduser().exists():
        found.append(Path(cfg.model.name))
    source = cfg._origins.get("", "")
    if source and Path(source).is_file():
        found.append(Path(source))
    return found


def _output_bytes(cfg: Config, model: Any) -> tuple[int, str]:
    """(bytes, description) the run will write; see estimate_output_bytes."""
    params = list(model.parameters())
    trainable = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    whole = sum(p.numel() * p.element_size() for p in params)
    checkpoints = cfg.train.keep_last + 1 if cfg.train.save_every else 0
    return estimate_output_bytes(trainable, whole, lora=cfg.model.lora is not None,
                                 merge=cfg.model.merge, checkpoints=checkpoints)


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps up to `step` (the checkpoint resumed from): the resumed run
    writes the later ones again. A line torn by a kill is dropped. Rewritten atomically."""
    if not path.exists():
        return
    keep = [json.dumps(rec) for rec in iter_log(path) if rec["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))


def _gradient_culprits(
    accelerator: Any, objective: Objective, inner: Any, reference_fn: Any, batcher: StepBatcher,
    micro_batches: range, params: list[torch.Tensor],
) -> list[str]:
    """Which terms have a non-finite gradient when all their values are finite: each term's
    gradient alone, recomputed on this step's micro-batches. Runs only after a non-finite gradient.
    Under FSDP/DeepSpeed the unwrapped model cannot run alone: the answer there is []."""
    if sharded(accelerator):
        return []
    flags = [0.0] * len(objective.terms)
    for index in micro_batches:
        batch = batcher.batch(index).to(accelerator.device)
        with accelerator.autocast():
            ctx = StepContext(inner, batch, reference_fn, objective.reference_segments, objective.hidden_layers)
            for i, wt in enumerate(objective.terms):
                value = wt.term.fn(ctx, **wt.params)
                if not value.requires_grad:
                    continue
                grads = torch.autograd.grad(value, params, retain_graph=True, allow_unused=True)
                if any(g is not None and not bool(torch.isfinite(g).all()) for g in grads):
                    flags[i] = 1.0
    flags = sum_across(accelerator, flags)
    return [wt.term.name for wt, f in zip(objective.terms, flags) if f > 0]


def _interrupt(ex: _Exit, accelerator: Any, cfg: Config, step: int, checkpoint: Any, finetune: bool) -> None:
    """After SIGINT/SIGTERM: write a checkpoint (unless this step just did), record it in run.json
    and raise RunInterrupted with the command that resumes."""
    assert ex.stop is not None and ex.manifest is not None and ex.out is not None
    ckpt = None
    if not sharded(accelerator):
        if checkpoint is not None:
            checkpoint()
        ckpt = latest_checkpoint(ex.out)
    command = f"unlearn {'finetune' if finetune else 'run'} {ex.out / 'config.yaml'} --resume"
    if accelerator.num_processes > 1:
        command = f"accelerate launch <the same options> -m {command}"
    where = f"checkpoint {ckpt}" if ckpt else "no checkpoint (not supported under FSDP/DeepSpeed)"
    ex.manifest.end("interrupted", steps=step, signal=ex.stop.name, last_checkpoint=str(ckpt) if ckpt else None,
                    resume=command)
    raise RunInterrupted(
        f"{ex.stop.name}: stopped after step {step} of {cfg.train.max_steps}; {where}; "
        f"resume with: {command}",
        ex.stop.signum or 0,
        ckpt,
    )


def _check_resume_config(out: Path, cfg: Config) -> None:
    """A resumed run must be the same run: only train.max_steps may change."""
    import yaml

    from unlearn.config import config_from_dict

    saved = config_from_dict(yaml.safe_load((out / "config.yaml").read_text()))
    ours = config_from_dict(cfg.to_dict())
    if ours.train.lr is None:
        ours.train.lr = saved.train.lr
    if ours.objective != saved.objective:
        ours.objective = Objective(ours.objective).to_config()

    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            out_: dict[str, Any] = {}
            for k, v in d.items():
                out_.update(flat(v, f"{prefix}{k}."))
            return out_
        return {prefix[:-1]: d}

    a, b = flat(saved.to_dict()), flat(ours.to_dict())
    # Evaluation settings may change (they do not change what is trained), except the split.
    free = lambda k: k == "train.max_steps" or (k.startswith("eval.") and not k.startswith("eval.split"))  # noqa: E731
    diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and not free(k))
    if diff:
        raise UnlearnError(
            f"--resume: the config differs from {out / 'config.yaml'} in: {', '.join(diff)} "
            "(only train.max_steps may change when resuming)"
        )


def _print_plan(console: Any, cfg: Config, manifest: dict[str, Any], segments: tuple[str, ...]) -> None:
    ex = manifest["examples"]
    tr = manifest["truncated"]
    rows = [
        f"model      {cfg.model.name} ({cfg.model.dtype}"
        + (f", LoRA r={cfg.model.lora.r}" if cfg.model.lora else ", full fine-tune")
        + f"; {manifest['trainable_parameters']:,} of {manifest['parameters']:,} parameters trained)",
        "objective  " + ", ".join(f"{k} x {v if not isinstance(v, dict) else v['weight']}" for k, v in cfg.objective.items()),
        f"data       forget {ex['forget']}, retain {ex['retain']}, mismatch pool {ex['mismatch_pool']}"
        + (f" (k={cfg.data.mismatch.k})" if "mismatch" in segments else ""),
        f"steps      {cfg.train.max_steps} x batch {cfg.train.batch_size}"
        + (f" x accum {cfg.train.grad_accum}" if cfg.train.grad_accum > 1 else "")
        + f", lr {cfg.train.lr:g} ({cfg.train.scheduler})",
        f"output     {cfg.output_dir}",
    ]
    if tr["prompts"] or tr["responses"]:
        rows.append(
            f"[yellow]truncated  {tr['prompts']} of {tr['of']} examples lost prompt tokens "
            f"(data.max_length={cfg.data.max_length}); {tr['responses']} lost response tokens[/yellow]"
        )
    for r in rows:
        console.print(r)
