"""The Python API behind the commands: `run`, `finetune`, `run_eval`, `audit` (what `unlearn run`,
`unlearn finetune`, `unlearn eval` and `unlearn audit` do). The package root re-exports them lazily; modules inside
unlearn import them from here, never from the root (the root must not be imported by its own
submodules: that is an import cycle)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from unlearn.config import Config, config_from_dict, load_config

if TYPE_CHECKING:
    from unlearn.evaluate.run import EvalResult
    from unlearn.train import RunResult


def as_config(config: Union[Config, str, Path], overrides: list[str] | None = None) -> Config:
    """A Config from a Config (overrides applied on top, keeping where each key came from) or from
    a YAML file or packaged recipe's name."""
    if isinstance(config, Config):
        if overrides:
            return config_from_dict(config.to_dict(), overrides, config.origins)
        return config
    return load_config(config, overrides)


def run(
    config: Union[Config, str, Path],
    overrides: list[str] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    console: Any = None,
) -> "RunResult":
    """Unlearn: exactly what `unlearn run CONFIG [overrides] [--overwrite] [--resume]` does."""
    from unlearn.train import train

    cfg = as_config(config, overrides)
    check_earlier_ledger(cfg, resume)
    result = train(cfg, overwrite=overwrite, resume=resume, console=console, evaluator=training_evaluator(cfg))
    record_ledger(result, cfg, finetune=False, console=console)
    return result


def finetune(
    config: Union[Config, str, Path],
    overrides: list[str] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    console: Any = None,
) -> "RunResult":
    """Supervised fine-tuning on forget + retain data: what `unlearn finetune` does."""
    from unlearn.train import train

    cfg = as_config(config, overrides)
    check_earlier_ledger(cfg, resume)
    result = train(cfg, overwrite=overwrite, resume=resume, finetune=True, console=console,
                   evaluator=training_evaluator(cfg))
    record_ledger(result, cfg, finetune=True, console=console)
    return result


def check_earlier_ledger(cfg: Config, resume: bool) -> None:
    """Before training: the ledger of the run model.name comes from (and with --resume the run's
    own) reads (docs/ledger.md)."""
    from unlearn.evaluate.ledger import check_earlier

    check_earlier(cfg, resume)


def record_ledger(result: "RunResult", cfg: Config, *, finetune: bool, console: Any) -> None:
    """After training (not inside the loop): OUTPUT_DIR/ledger.jsonl gets this request's entry,
    written by the main process with the resolved config the run trained with."""
    from unlearn.evaluate.ledger import record_request

    record_request(result.config or cfg, result.output_dir, finetune=finetune, console=console)


def training_evaluator(cfg: Config) -> Any:
    """The train.eval_every callback (None when off). Built here, not in train, because evaluation
    stands after training in the package's layering (train never imports unlearn.evaluate)."""
    if not cfg.train.eval_every:
        return None
    from unlearn.evaluate.during import TrainingEvaluator

    return TrainingEvaluator(cfg)


def run_eval(
    config: Union[Config, str, Path],
    overrides: list[str] | None = None,
    *,
    model_dir: str | Path | None = None,
    allow_unfinished: bool = False,
    report_dir: str | Path | None = None,
    write: bool = True,
    original: Any = None,
    console: Any = None,
) -> "EvalResult":
    """Evaluate OUTPUT_DIR/model against the original model: what `unlearn eval` does. When
    OUTPUT_DIR/ledger.jsonl holds earlier requests, their forget sets are re-checked on the model
    (metrics["earlier_requests"]); with write=True the ledger's last entry gets the metrics.

    Returns an EvalResult (.metrics is metrics.json's content, .samples the lines of samples.jsonl,
    .original the original model's outputs, reusable as `original=` for another run of the same
    model and sets). With write=True the report goes to OUTPUT_DIR/eval (or report_dir).
    """
    from unlearn.benchmarks.run import plan_benchmarks, run_benchmarks
    from unlearn.evaluate.ledger import record_evaluation
    from unlearn.evaluate.recheck import plan_recheck, recheck
    from unlearn.evaluate.run import evaluate_run
    from unlearn.report import write_report

    cfg = as_config(config, overrides)
    plan = plan_recheck(cfg)  # a bad ledger line stops here, before any model generates
    benchmarks = plan_benchmarks(cfg)  # and so does a benchmark's bad parameter or data file
    result = evaluate_run(
        cfg, model_dir=Path(model_dir) if model_dir else None, allow_unfinished=allow_unfinished,
        original=original, console=console,
    )
    if plan is not None:  # a later request: has a behaviour an earlier one removed come back?
        result.metrics["earlier_requests"] = recheck(cfg, result.model_dir, plan, console=console)
    if benchmarks:  # eval.benchmarks: TOFU, MUSE, WMDP, lm-eval tasks on both models
        result.metrics["benchmarks"] = run_benchmarks(cfg, result.model_dir, benchmarks, console=console)
    attacks = None
    if cfg.eval.audit:  # eval.audit: the attacks too, their section in the same report
        attacks = audit(cfg, model_dir=model_dir, allow_unfinished=allow_unfinished, console=console,
                        audit_dir=Path(report_dir).parent / "audit" if report_dir else None, write=write,
                        extend_report=False)
    if write:
        write_report(result, Path(report_dir) if report_dir else None, audit=attacks)
        record_evaluation(cfg, result.metrics, result.output_dir, result.model_dir)
    return result


def audit(
    config: Union[Config, str, Path],
    overrides: list[str] | None = None,
    *,
    model_dir: str | Path | None = None,
    allow_unfinished: bool = False,
    audit_dir: str | Path | None = None,
    write: bool = True,
    extend_report: bool = True,
    console: Any = None,
) -> dict[str, Any]:
    """Attack OUTPUT_DIR/model and the original model: what `unlearn audit` does. Returns
    audit.json's content; with write=True writes OUTPUT_DIR/audit (or audit_dir) and, when
    OUTPUT_DIR/eval holds a report of the same model, adds the "Is it really gone?" section to it."""
    from unlearn.auditing.run import run_audit
    from unlearn.report import add_audit_to_report, write_audit

    cfg = as_config(config, overrides)
    data = run_audit(cfg, model_dir=Path(model_dir) if model_dir else None, allow_unfinished=allow_unfinished,
                     console=console)
    if write:
        out = Path(data["run"]["output_dir"])
        folder = Path(audit_dir) if audit_dir else out / "audit"
        write_audit(folder, data)
        if extend_report:
            add_audit_to_report(folder.parent / "eval", data)
    return data
