"""The training loop of `unlearn run` and `unlearn finetune`, read top to bottom.

    setup: validate config, output dir, data, model (nothing is written until all of it passes),
           write OUTPUT_DIR/config.yaml and run.json, prepare policy, reference and optimizer
    -> for each step: train_step (micro-batches -> one fused forward -> objective -> backward ->
       clip -> optimizer step), the schedule; a line to train_log.jsonl every train.log_every
       steps; a checkpoint every train.save_every; stop on max_steps or the stopping rule
    -> save the model atomically; mark run.json done

Under several processes the decisions that end or skip a step are taken on values all-reduced
across ranks (train_step), so every rank takes the same one. How a run that does not finish
leaves run.json: unlearn.train.exits.
"""

from __future__ import annotations

import math
import time
import warnings as warnings_
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from unlearn.config import Config
from unlearn.distributed import full_state_dict, on_main
from unlearn.errors import UnlearnError
from unlearn.files import inside, is_write_error, write_error
from unlearn.models import DTYPES, save_model
from unlearn.runstate import GracefulStop
from unlearn.train.checkpoint import latest_checkpoint, save_checkpoint, write_json_atomic
from unlearn.train.exits import RunExit, guarded, interrupt
from unlearn.train.progress import Progress, TrainLog
from unlearn.train.setup import Run, setup
from unlearn.train.step import train_step

Evaluator = Callable[[Any, Any, int], dict[str, float]]


@dataclass
class RunResult:
    output_dir: Path
    steps: int
    stop_reason: str
    seconds: float
    model_dir: Path
    last: dict[str, float] = field(default_factory=dict)  # the last applied step's log record
    config: Config | None = None  # the resolved config the run trained with (OUTPUT_DIR/config.yaml)


class ForgetNllStop:
    """Stop once the forget NLL per token has exceeded `threshold` and stayed above it for a further
    `factor` x the steps it took to get there (the paper: keep unlearning 3-5x longer after the
    forget loss jumps). Dropping back below the threshold restarts the count. crossed_at: the step
    it crossed at, kept in checkpoints so that a resumed run stops where an uninterrupted one does."""

    def __init__(self, threshold: float, factor: float, crossed_at: int | None = None):
        self.threshold, self.factor = threshold, factor
        self.crossed_at = crossed_at

    def update(self, step: int, forget_nll: float) -> bool:
        if forget_nll > self.threshold:
            if self.crossed_at is None:
                self.crossed_at = step
            return step >= self.crossed_at + math.ceil(self.factor * self.crossed_at)
        self.crossed_at = None
        return False


def train(
    cfg: Config,
    *,
    overwrite: bool = False,
    resume: bool = False,
    finetune: bool = False,
    console: Any = None,
    evaluator: Evaluator | None = None,
) -> RunResult:
    """Run `unlearn run` (or `unlearn finetune` with finetune=True) for a loaded Config, which is
    not changed (the run resolves a copy: RunResult.config).

    evaluator(model, tokenizer, step) -> {metric: value, 'score': value} runs every
    train.eval_every steps (unlearn.run passes unlearn.evaluate.during.TrainingEvaluator).

    Raises UnlearnError for bad input (nothing written) and for a run that fails (run.json says
    `failed` and why), RunInterrupted after SIGINT/SIGTERM (run.json says `interrupted`).
    """
    ex = RunExit()

    def body() -> RunResult:
        run = setup(cfg, ex, overwrite=overwrite, resume=resume, finetune=finetune, console=console,
                    evaluator=evaluator)
        return loop(run, ex, evaluator)

    return guarded(ex, cfg, body)


def loop(run: Run, ex: RunExit, evaluator: Evaluator | None) -> RunResult:
    """Train from run.start_step to train.max_steps (or the stopping rule), then save the model."""
    cfg, parts, accelerator, console = run.cfg, run.parts, run.accelerator, run.console
    max_steps = cfg.train.max_steps
    stopper = (
        ForgetNllStop(cfg.train.stop_forget_nll, cfg.train.continue_factor, run.resumed_loop.get("stop_crossed_at"))
        if cfg.train.stop_forget_nll is not None and "forget" in run.segments
        else None
    )
    title = "finetune" if run.finetune else "unlearn"
    progress = Progress(console, max_steps, run.start_step, title) if run.main else None
    log = TrainLog(run.log_path, cfg.train.log_every) if run.main else None
    nonfinite_run = 0
    skipped: list[int] = list(run.resumed_loop.get("skipped_steps", []))  # 0-based steps not applied
    stop_reason = "max_steps"
    last: dict[str, Any] = {}
    step = run.start_step
    best = run.best
    ex.stop = GracefulStop().install()
    if evaluator is not None and run.main:
        _baseline(evaluator, run)

    def checkpoint() -> None:
        on_main(accelerator, lambda: save_checkpoint(
            run.out, step, parts.inner.model, parts.optimizer, run.scheduler, cfg.train.keep_last,
            {**run.data_position, "micro_batch_index": step * cfg.train.grad_accum},
            {"stop_crossed_at": stopper.crossed_at if stopper is not None else None, "skipped_steps": skipped,
             "terms": parts.objective.state_dict()}))

    try:
        while step < max_steps:
            ex.step = step
            t0 = time.time()
            lr = parts.optimizer.param_groups[0]["lr"]  # the one this step applies (logged as such)
            result = train_step(parts, step, lambda: ex.stop is not None and ex.stop.requested)
            if result.nonfinite:
                if not result.scaler_skipped:
                    nonfinite_run += 1
                    _report_nonfinite(run, step, result.nonfinite, nonfinite_run)
                skipped.append(step)
                step += 1
                with warnings_.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose
                    warnings_.simplefilter("ignore", UserWarning)
                    run.scheduler.step()
                if log is not None:
                    log.skipped(step, result.nonfinite)
                if result.stop_requested:
                    interrupt(ex, accelerator, cfg, step, checkpoint, run.finetune)
                continue
            nonfinite_run = 0
            run.scheduler.step()
            step += 1

            record = {
                "step": step,
                "loss": result.values["loss"],
                **{k: v for k, v in result.values.items() if k != "loss"},
                "lr": lr,
                "grad_norm": result.grad_norm,
                "tokens": result.tokens,
                "seconds": round(time.time() - t0, 4),
            }
            evaluated = evaluator is not None and (step % cfg.train.eval_every == 0 or step == max_steps)
            if evaluated:
                assert evaluator is not None
                best = _evaluate(evaluator, run, step, record, best)
                accelerator.wait_for_everyone()
            last = record
            save = bool(cfg.train.save_every) and step % cfg.train.save_every == 0 and step < max_steps
            stop = stopper is not None and stopper.update(step, result.values["forget_nll"])
            evaluated_stop = _stop_asked(accelerator, record) if evaluated else None
            interrupted = result.stop_requested and step < max_steps
            if log is not None and progress is not None:
                # Every step's line is written before a checkpoint of that step (see TrainLog).
                line = log.add(record, flush=step == max_steps or save or stop or interrupted or "eval" in record)
                if line is not None:
                    progress.update(step, {k: line[k] for k in result.values})
            if save:
                checkpoint()
            if stop:
                assert stopper is not None
                stop_reason = f"forget NLL above {cfg.train.stop_forget_nll} since step {stopper.crossed_at}"
                break
            if evaluated_stop:
                stop_reason = evaluated_stop
                break
            if interrupted:
                interrupt(ex, accelerator, cfg, step, None if save else checkpoint, run.finetune)
    finally:
        if progress is not None:
            progress.close()
        if log is not None:
            log.close()
    ex.step = step
    return _finish(run, ex, step, stop_reason, best, last, trained_examples(run, step, skipped))


def _report_nonfinite(run: Run, step: int, bad: list[str], in_a_row: int) -> None:
    """Say that step `step` + 1 was skipped; stop the run after train.max_nonfinite in a row."""
    if run.main:
        run.console.print(
            f"[yellow]step {step + 1}: non-finite {', '.join(bad)}; step skipped "
            f"({in_a_row}/{run.cfg.train.max_nonfinite} in a row)[/yellow]"
        )
    if in_a_row >= run.cfg.train.max_nonfinite:
        good = latest_checkpoint(run.out)
        raise UnlearnError(
            f"stopped: non-finite {', '.join(bad)} at step {step + 1} ({in_a_row} steps in a row, none "
            f"applied); last good checkpoint: {good if good else 'none (train.save_every: 0)'}; try a "
            "lower train.lr or train.mixed_precision: no"
        )


def _evaluate(evaluator: Evaluator, run: Run, step: int, record: dict[str, Any],
              best: dict[str, Any] | None) -> dict[str, Any] | None:
    """train.eval_every: log the evaluator's values under record['eval']; with train.keep_best save
    the model to OUTPUT_DIR/best/model when the score beats the best so far (ties keep the earlier).
    Runs on the main process only; the model is unwrapped (no DDP hooks)."""
    if not run.main:
        return best
    model, cfg = run.parts.inner.model, run.cfg
    values = evaluator(model, run.tokenizer, step)
    record["eval"] = values
    # A collapsed model (one answer to everything) may score well on forgetting: it is never kept; with
    # train.stop_when_forgotten neither is one whose utility was lost (the verdict's rules).
    keepable = not values.get("collapsed") and values.get("utility_kept") is not False
    if cfg.train.keep_best and keepable and (best is None or values["score"] > best["score"]):
        (run.out / "best").mkdir(exist_ok=True)
        # The adapter only for LoRA: merging here would change the model being trained.
        save_model(model, run.tokenizer, run.out / "best", base_name=cfg.model.name, merge=False,
                   dtype=DTYPES[cfg.model.dtype])
        best = {"step": step, **values}
        write_json_atomic(run.out / "best" / "best.json", best)
    return best


def _baseline(evaluator: Evaluator, run: Run) -> None:
    """Let the evaluator measure the original model before the first step (its `start`), or, in a
    resumed run, load the original for it (`start_from_original`). Evaluators without them skip it."""
    if run.start_step == 0 and hasattr(evaluator, "start"):
        evaluator.start(run.parts.inner.model, run.tokenizer)
    elif run.start_step > 0 and hasattr(evaluator, "start_from_original"):
        evaluator.start_from_original(run.tokenizer)


def _stop_asked(accelerator: Any, record: dict[str, Any]) -> str | None:
    """The evaluator's stop reason (train.stop_when_forgotten), the same on every process: the main
    process evaluates, the others learn its answer."""
    reason = [record.get("eval", {}).get("stop")]
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(reason, from_process=0)
    return reason[0]


def trained_examples(run: Run, steps: int, skipped: list[int]) -> dict[str, Any]:
    """run.json's `trained_examples`: the forget examples the applied steps among the first
    `steps` used, by example_hash, in order of first use, with how many optimizer steps used each.
    Recomputed from the batcher (batches are a pure function of the step), so a resumed run counts
    the steps before its checkpoint too."""
    applied = sorted(set(range(steps)) - set(skipped))
    use = run.parts.batcher.forget_use(applied, run.cfg.train.grad_accum)
    return {"forget": {"total": len(run.forget_hashes), "seen": [[run.forget_hashes[i], n] for i, n in use]}}


def _finish(run: Run, ex: RunExit, step: int, stop_reason: str, best: dict[str, Any] | None,
            last: dict[str, Any], trained: dict[str, Any]) -> RunResult:
    """Save the model (gathered from every rank under FSDP/ZeRO-3) and mark run.json done."""
    cfg, out, accelerator = run.cfg, run.out, run.accelerator
    state_dict = full_state_dict(accelerator, run.parts.policy)

    def save() -> dict[str, str]:
        inside(out, "model"), inside(out, "adapter")
        try:
            return save_model(run.parts.inner.model, run.tokenizer, out, base_name=cfg.model.name,
                              merge=cfg.model.merge, state_dict=state_dict, dtype=DTYPES[cfg.model.dtype])
        except Exception as e:
            if is_write_error(e):
                raise write_error(f"the model to {out / 'model'}", e) from None
            raise

    written = on_main(accelerator, save) or {}
    assert ex.manifest is not None
    ex.manifest.update(
        status="done", steps=step, stop_reason=stop_reason, seconds=round(time.time() - run.t_start, 2),
        outputs=written, trained_examples=trained, **({"best": best} if best is not None else {}),
    )
    if run.main:
        run.console.print(f"[green]Done[/green] after {step} steps ({stop_reason}). Model: {out / 'model'}")
    accelerator.wait_for_everyone()
    return RunResult(out, step, stop_reason, time.time() - run.t_start, out / "model", last, cfg)
