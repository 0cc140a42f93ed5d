"""The training loop of `unlearn run` and `unlearn finetune`, in one place, read top to bottom.

    validate config, output dir, data, model      (nothing is written until all of it passes)
    -> write OUTPUT_DIR/config.yaml and run.json
    -> for each step: micro-batches -> one fused forward -> objective -> backward -> clip -> step
       log a line to train_log.jsonl; checkpoint every save_every; stop on max_steps or the rule
    -> save the model atomically; mark run.json done
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from unlearn.config import Config
from unlearn.data import Encoder, StepBatcher, TruncationReport, encode_examples, load_source, split_examples
from unlearn.errors import UnlearnError
from unlearn.models import Reference, add_lora, load_model, save_model
from unlearn.objective import Objective, ResponseLM, StepContext, response_logits

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
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def check_output_dir(path: Path, *, overwrite: bool, resume: bool) -> None:
    """Refuse to clobber a previous run; check that the folder can be created. Writes nothing."""
    if path.exists():
        if not path.is_dir():
            raise UnlearnError(f"output_dir '{path}' exists and is a file")
        if resume:
            if not (path / "config.yaml").exists():
                raise UnlearnError(f"--resume: '{path}' holds no run (no config.yaml)")
            return
        if any(path.iterdir()) and not overwrite:
            raise UnlearnError(
                f"output_dir '{path}' exists and is not empty; pass --overwrite to replace it "
                "or --resume to continue it"
            )
    elif resume:
        raise UnlearnError(f"--resume: output_dir '{path}' does not exist")
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UnlearnError(f"output_dir '{path}': cannot write in '{probe}' (permission denied)")


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


def save_checkpoint(folder: Path, step: int, model: Any, optimizer: Any, scheduler: Any, keep_last: int) -> Path:
    """Write checkpoints/step-N atomically (a temp folder renamed into place)."""
    from safetensors.torch import save_file

    root = folder / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:07d}"
    tmp = root / f".tmp-step-{step:07d}-{uuid.uuid4().hex[:8]}"
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
         "scheduler": sched, "rng": rng_meta},
    )
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in sorted(root.glob("step-*"))[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(folder: Path) -> Path | None:
    done = [p for p in sorted((folder / "checkpoints").glob("step-*")) if (p / "state.json").exists()]
    return done[-1] if done else None


def load_checkpoint(path: Path, model: Any, optimizer: Any, scheduler: Any) -> int:
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    trainable = load_file(path / "trainable.safetensors")
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in trainable.items():
            if n not in params:
                raise UnlearnError(f"{path}: checkpoint has parameter '{n}' that this model lacks")
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    opt_tensors = load_file(path / "optimizer.safetensors")
    opt_state: dict[int, dict[str, Any]] = {}
    for key, v in list(opt_tensors.items()) + list(state["optimizer_scalars"].items()):
        idx, _, name = key.partition(".")
        opt_state.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": opt_state, "param_groups": state["param_groups"]})
    # LambdaLR keeps its lambdas out of the checkpoint (functions): they come from the config.
    scheduler.load_state_dict({**state["scheduler"], "lr_lambdas": [None] * len(optimizer.param_groups)})
    _set_rng_state(load_file(path / "rng.safetensors"), state["rng"])
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
    """
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

    segments = objective.segments
    need_forget = "forget" in segments or "mismatch" in segments
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
            data_key = {"forget": "forget", "mismatch": "forget", "retain": "retain"}[seg]
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
    if cfg.train.lr is None:
        cfg.train.lr = DEFAULT_LR_LORA if cfg.model.lora is not None else DEFAULT_LR_FULL
    cfg.objective = objective.to_config()

    accelerator = Accelerator(
        mixed_precision=cfg.train.mixed_precision,
        cpu=cfg.train.device == "cpu",
    )
    batcher = StepBatcher(
        encoder,
        forget=forget_enc,
        forget_prompts=[e.prompt for e in forget] if forget and need_forget else [],
        retain=retain_enc,
        mismatch_pool=pool,
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
        (out / "config.yaml").write_text(cfg.to_yaml())
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
    optimizer = torch.optim.AdamW(
        params, lr=cfg.train.lr, betas=tuple(cfg.train.betas), weight_decay=cfg.train.weight_decay
    )
    scheduler = get_scheduler(
        cfg.train.scheduler, optimizer, num_warmup_steps=cfg.train.warmup_steps,
        num_training_steps=cfg.train.max_steps,
    )
    policy, optimizer = accelerator.prepare(policy, optimizer)
    inner = accelerator.unwrap_model(policy)
    probe = batcher.batch(0).to(accelerator.device)
    inner.check_fast_path(probe.input_ids[:1], probe.attention_mask[:1], probe.labels[:1])

    reference_fn = None
    if objective.needs_reference:
        # LoRA: the policy with adapters disabled. Full fine-tune: one frozen copy in compute dtype.
        reference = Reference.build(inner.model, compute_dtype if cfg.model.lora is None else None)

        def reference_fn(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor):
            with accelerator.autocast(), reference.model() as ref_model:
                return response_logits(ref_model, ids, mask, labels, inner.fast)

    start_step = 0
    log_path = out / "train_log.jsonl"
    if resume:
        ckpt = latest_checkpoint(out)
        if ckpt is None:
            raise UnlearnError(f"--resume: no complete checkpoint in {out / 'checkpoints'}")
        start_step = load_checkpoint(ckpt, inner.model, optimizer, scheduler)
        if main and log_path.exists():
            kept = [ln for ln in log_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= start_step]
            log_path.write_text("".join(ln + "\n" for ln in kept))
        console.print(f"Resuming from {ckpt} (step {start_step})")

    n_trainable = sum(p.numel() for p in params)
    n_total = sum(p.numel() for p in inner.model.parameters())
    manifest = {
        "status": "running",
        "kind": "finetune" if finetune else "unlearn",
        "model": cfg.model.name,
        "objective": cfg.objective,
        "examples": {"forget": len(forget or []), "retain": len(retain or []), "mismatch_pool": len(pool)},
        "truncated": {"prompts": report.prompts, "responses": report.responses, "of": report.total},
        "trainable_parameters": n_trainable,
        "parameters": n_total,
        "fast_logits": inner.fast,
    }
    if main:
        write_json_atomic(out / "run.json", manifest)
        _print_plan(console, cfg, manifest, segments)

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
    try:
        while step < cfg.train.max_steps:
            t0 = time.time()
            sums: dict[str, float] = {}
            tokens = 0
            bad_terms: list[str] = []
            for micro in range(accum):
                batch = batcher.batch(step * accum + micro).to(accelerator.device)
                tokens += batch.tokens
                sync = accelerator.no_sync(policy) if micro < accum - 1 else nullcontext()
                with sync, accelerator.autocast():
                    ctx = StepContext(policy, batch, reference_fn, objective.reference_segments)
                    loss, values = objective(ctx)
                    if not torch.isfinite(loss):
                        bad_terms = [k for k, v in values.items() if not torch.isfinite(v)] or ["loss"]
                        break
                    accelerator.backward(loss / accum)
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
                sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) / accum
                if ctx.has("forget"):
                    sums["forget_nll"] = sums.get("forget_nll", 0.0) + float(ctx.seq_nll("forget").detach().mean()) / accum

            grad_norm = None
            if not bad_terms:
                if cfg.train.max_grad_norm is not None:
                    grad_norm = float(accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm))
                else:
                    grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None]))
                if not math.isfinite(grad_norm) and cfg.train.mixed_precision != "fp16":
                    bad_terms = ["gradient"]
            if bad_terms:
                optimizer.zero_grad(set_to_none=True)
                nonfinite_run += 1
                console.print(
                    f"[yellow]step {step + 1}: non-finite {', '.join(bad_terms)}; step skipped "
                    f"({nonfinite_run}/{cfg.train.max_nonfinite} in a row)[/yellow]"
                )
                if nonfinite_run >= cfg.train.max_nonfinite:
                    stop_reason = f"non-finite {', '.join(bad_terms)} at step {step + 1}"
                    raise UnlearnError(
                        f"stopped: {stop_reason} ({nonfinite_run} steps in a row); try a lower "
                        "train.lr or train.mixed_precision: no"
                    )
                step += 1
                scheduler.step()
                if main:
                    log_file.write(json.dumps({"step": step, "skipped": True, "nonfinite": bad_terms}) + "\n")
                    log_file.flush()
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
                "tokens": tokens * accelerator.num_processes,
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
            if cfg.train.save_every and step % cfg.train.save_every == 0 and step < cfg.train.max_steps:
                if main:
                    save_checkpoint(out, step, inner.model, optimizer, scheduler, cfg.train.keep_last)
                accelerator.wait_for_everyone()
            if stopper is not None and stopper.update(step, sums["forget_nll"]):
                stop_reason = (
                    f"forget NLL above {cfg.train.stop_forget_nll} since step {stopper.crossed_at}"
                )
                break
    finally:
        if progress is not None:
            progress.close()
        if log_file is not None:
            log_file.close()

    # ---- 5. save -----------------------------------------------------------------------------------
    accelerator.wait_for_everyone()
    written: dict[str, str] = {}
    if main:
        written = save_model(inner.model, tokenizer, out, base_name=cfg.model.name, merge=cfg.model.merge)
        manifest.update(
            status="done", steps=step, stop_reason=stop_reason, seconds=round(time.time() - t_start, 2),
            outputs=written,
        )
        if best is not None:
            manifest["best"] = best
        write_json_atomic(out / "run.json", manifest)
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
