"""Everything a run needs before its first step, in one value (`Run`), built by `setup`:

    resolve the config (a new Config: the caller's is never changed), check the output folder,
    load the data and the model, add LoRA, bind the terms      (nothing is written until all passes)
    -> write OUTPUT_DIR/config.yaml and run.json
    -> the policy, its reference, optimizer and scheduler, prepared for the engine (prepare_policy)
    -> with --resume: the latest checkpoint restored
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from unlearn.config import Config, TrainConfig
from unlearn.data import Encoder, StepBatcher, TruncationReport, encode_examples, load_source, split_examples
from unlearn.data.batch import FROM_FORGET
from unlearn.data.checks import data_warnings
from unlearn.data.records import example_hash
from unlearn.data.refusals import REFUSALS
from unlearn.distributed import (
    check_engine_options, configure_engine, engine, make_shardable, new_accelerator, reference_forward, sharded,
)
from unlearn.errors import UnlearnError
from unlearn.files import check_free_space, inside, refuse_dangerous_overwrite, remove_stale_temps, write_text_atomic
from unlearn.models import Reference, ResponseLM, add_lora, disable_dropout, load_model, own_memory
from unlearn.objective import Objective
from unlearn.runstate import Manifest, run_status
from unlearn.train.checkpoint import check_resume_config, latest_checkpoint, load_checkpoint, loop_state
from unlearn.train.exits import RunExit
from unlearn.train.outputs import check_output_dir, output_bytes, run_inputs
from unlearn.train.progress import print_plan, truncate_log
from unlearn.train.step import StepParts

DEFAULT_LR_FULL = 2e-6
DEFAULT_LR_LORA = 1e-4
COMPUTE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Run:
    """What the loop needs, resolved and prepared."""

    cfg: Config  # the resolved config (defaults filled in), a copy: the caller's is unchanged
    finetune: bool
    console: Any
    out: Path
    log_path: Path  # OUTPUT_DIR/train_log.jsonl
    accelerator: Any
    main: bool  # the main process: it writes the files
    parts: StepParts  # policy, reference, objective, batcher, optimizer: what train_step runs on
    scheduler: Any
    tokenizer: Any
    segments: tuple[str, ...]  # the batch segments the objective reads
    data_position: dict[str, Any]  # recorded in checkpoints: a resumed run must see the same batches
    start_step: int  # 0, or the step of the checkpoint resumed from
    best: dict[str, Any] | None  # train.keep_best: the best evaluation so far (resumed from best.json)
    t_start: float
    forget_hashes: list[str]  # example_hash of each forget example the batcher draws from (its index)
    resumed_loop: dict[str, Any]  # the loop's state in the checkpoint resumed from ({} when none)


def resolve_config(cfg: Config, finetune: bool) -> tuple[Config, Objective]:
    """A copy of cfg to resolve (finetune's objective, later the default lr) and its Objective."""
    cfg = copy.deepcopy(cfg)
    if finetune:
        cfg.objective = {"nll": 1.0}
    return cfg, Objective(cfg.objective, where=cfg.origin)


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


def master_weights(model: Any, mixed_precision: str, device: str) -> str:
    """Full fine-tuning of half-precision weights: train an fp32 copy of them under autocast to
    their dtype (fp32 master weights), and return the autocast to use (train.mixed_precision, or
    the weights' own dtype when that is `no`). Trained in their own dtype, an update of lr 2e-6
    against bfloat16 weights of 1e-3..5e-2 rounds away: the run would train almost nothing. The
    saved model goes back to model.dtype. float16 weights on a CPU train and run in fp32 (CPU has
    no fp16 autocast with loss scaling)."""
    dtype = next(model.parameters()).dtype
    if dtype not in (torch.bfloat16, torch.float16):
        return mixed_precision
    model.float()
    if mixed_precision != "no":
        return mixed_precision
    if dtype == torch.bfloat16:
        return "bf16"
    gpu = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    return "fp16" if gpu else "no"


def prepare_policy(
    accelerator: Any, model: Any, objective: Objective, batcher: StepBatcher, train: TrainConfig, *,
    schedule: Callable[[Any], Any] | None = None, fused: bool | None = None,
) -> tuple[StepParts, Any]:
    """The policy (a ResponseLM around `model`), its frozen reference, the optimizer and
    `schedule(optimizer)` (the scheduler, or None), prepared for the accelerator's engine, with the
    fast logits path and row packing switched on where they reproduce the plain forward. Returns
    (the parts a step runs on, the scheduler). Used by the run and by benchmarks/."""
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model.train()
    if not train.keep_dropout:  # the reference runs without dropout: so does the policy
        disable_dropout(model)
    policy = ResponseLM(model)
    params = [p for p in model.parameters() if p.requires_grad]
    if accelerator.device.type == "cpu":  # trained here, each step writes them: not into the file's mapped pages
        own_memory(params)  # (on a GPU the engine copies them over; a CPU copy first would only cost RAM)
    optimizer = make_optimizer(params, train, fused)
    scheduler = schedule(optimizer) if schedule is not None else None
    probe = batcher.batch(0)
    if sharded(accelerator):  # once the engine splits the weights, only its wrapper may run them
        policy.check_fast_path(probe.input_ids[:1], probe.attention_mask[:1], probe.labels[:1])
        make_shardable(policy)
    # LoRA: the policy with adapters disabled. Full fine-tune: one frozen copy in compute dtype,
    # taken before the engine shards the policy, then prepared (sharded) like it.
    reference = (
        Reference.build(model, COMPUTE_DTYPES.get(accelerator.mixed_precision)) if objective.needs_reference else None
    )
    configure_engine(accelerator, batch_size=train.batch_size, max_grad_norm=train.max_grad_norm)
    policy, optimizer = accelerator.prepare(policy, optimizer)
    inner = accelerator.unwrap_model(policy)
    params = [p for p in inner.parameters() if p.requires_grad]  # FSDP2 replaces them with shards
    if not sharded(accelerator):
        probe = probe.to(accelerator.device)
        inner.check_fast_path(probe.input_ids[:1], probe.attention_mask[:1], probe.labels[:1])
        if train.pack_rows and not objective.hidden_layers:  # packed rows give no per-row hidden states
            inner.check_packing(probe.input_ids, probe.attention_mask, probe.labels)
    parts = StepParts(
        accelerator, policy, inner, objective, reference_forward(accelerator, policy, inner, reference), batcher,
        params, optimizer, reference, grad_accum=train.grad_accum, max_grad_norm=train.max_grad_norm,
        trace_gradients=accelerator.mixed_precision != "fp16",
    )
    return parts, scheduler


def setup(
    cfg: Config, ex: RunExit, *, overwrite: bool, resume: bool, finetune: bool, console: Any,
    evaluator: Any,
) -> Run:
    """Validate everything, then write the output folder's first files and prepare the run."""
    from accelerate.utils import set_seed
    from rich.console import Console
    from transformers import get_scheduler

    console = console or Console(stderr=True)
    t_start = time.time()

    # ---- 1. validate everything; write nothing -------------------------------------------
    cfg, objective = resolve_config(cfg, finetune)
    out = Path(cfg.output_dir).expanduser().resolve()
    check_output_dir(out, overwrite=overwrite, resume=resume)
    if resume:
        check_resume_config(out, cfg)
        if run_status(out) == "done" and latest_checkpoint(out) is None:
            raise UnlearnError(
                f"--resume: the run in '{out}' finished and left no checkpoint to continue from "
                "(train.save_every: 0); start again with --overwrite"
            )
    elif overwrite and out.exists():
        refuse_dangerous_overwrite(out, run_inputs(cfg))
    if cfg.train.eval_every and evaluator is None:
        raise UnlearnError(
            f"{cfg.origin('train.eval_every')}: train.eval_every needs an evaluator; use unlearn.run() "
            "or `unlearn run`, which pass one"
        )
    segments = objective.segments
    need_forget = any(s in FROM_FORGET for s in segments)
    forget, retain, pool = _load_data(cfg, objective, finetune)
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

    mixed_precision = cfg.train.mixed_precision
    if cfg.model.lora is not None:
        model = add_lora(model, cfg.model.lora)
    else:
        model.requires_grad_(True)
        mixed_precision = master_weights(model, mixed_precision, cfg.train.device)
    # Terms such as rmu read a decoder layer's output and train only some layers: resolve them now.
    objective.bind(model)
    objective.restrict_trainable(model)
    if cfg.train.lr is None:
        cfg.train.lr = DEFAULT_LR_LORA if cfg.model.lora is not None else DEFAULT_LR_FULL
    cfg.objective = objective.to_config()

    accelerator = new_accelerator(
        mixed_precision,
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
        check_free_space(out, *output_bytes(cfg, model))
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

    # ---- 3. model, reference, optimizer; the checkpoint resumed from --------------------------
    parts, scheduler = prepare_policy(accelerator, model, objective, batcher, cfg.train, schedule=lambda opt: get_scheduler(
        cfg.train.scheduler, opt, num_warmup_steps=cfg.train.warmup_steps, num_training_steps=cfg.train.max_steps,
    ))
    inner = parts.inner
    start_step = 0
    resumed_loop: dict[str, Any] = {}
    log_path = inside(out, "train_log.jsonl")
    data_position = {"seed": cfg.seed, "global_batch": global_batch, "grad_accum": cfg.train.grad_accum}
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            console.print(f"No complete checkpoint in {out / 'checkpoints'}: starting again from step 0")
        else:
            start_step = load_checkpoint(ckpt, inner.model, parts.optimizer, scheduler, data_position)
            resumed_loop = loop_state(ckpt)
            objective.load_state_dict(resumed_loop.get("terms") or {})  # e.g. PDU's dual variable
            console.print(f"Resuming from {ckpt} (step {start_step})")
        if main:
            truncate_log(log_path, start_step)

    plan = {
        "objective": cfg.objective,
        "examples": {"forget": len(forget or []), "retain": len(retain or []), "mismatch_pool": len(pool)},
        "truncated": {"prompts": report.prompts, "responses": report.responses, "of": report.total},
        "warnings": {key: n for key, n, _ in warnings},
        "trainable_parameters": sum(p.numel() for p in parts.params),
        "parameters": sum(p.numel() for p in inner.model.parameters()),
        "fast_logits": inner.fast,
        "packed_rows": inner.pack,
        "processes": accelerator.num_processes,
        "engine": engine(accelerator),
        "resumed_from": start_step if resume else None,
    }
    ex.manifest.update(**plan)
    if main:
        print_plan(console, cfg, plan, segments)
        for _, _, text in warnings:
            console.print(f"[yellow]warning: {text}[/yellow]")
    best_file = out / "best" / "best.json"
    best = json.loads(best_file.read_text()) if resume and cfg.train.keep_best and best_file.exists() else None
    forget_hashes = [example_hash(e.prompt, e.response) for e in forget] if forget and need_forget else []
    return Run(cfg, finetune, console, out, log_path, accelerator, main, parts, scheduler, tokenizer, segments,
               data_position, start_step, best, t_start, forget_hashes, resumed_loop)


def _load_data(cfg: Config, objective: Objective, finetune: bool) -> tuple[list | None, list | None, list[str]]:
    """(forget, retain, mismatch pool) examples; finetune trains on forget + retain as retain."""
    segments = objective.segments
    forget = load_source(cfg.data.forget, "forget") if cfg.data.forget else None
    if forget and cfg.eval.split and not finetune:  # unlearn the train part; val/test are held out
        forget = split_examples(forget, cfg.eval.split, cfg.seed)[0]
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
    return forget, retain, _pool(cfg, retain) if "mismatch" in segments else []


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
