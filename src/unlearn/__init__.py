"""unlearn: make a language model stop producing specific outputs, from examples of those outputs.

    from unlearn import load_config, run, run_eval
    result = run(load_config("unlearn.yaml", ["train.max_steps=200"]))
    report = run_eval(load_config("unlearn.yaml"))        # writes OUTPUT_DIR/eval
    report.metrics["metrics"]["forget"]["leak_rate"]      # {"original": .., "unlearned": .., "change": ..}
    table = compare("unlearn.yaml", methods="paper,ga,npo")  # writes OUTPUT_DIR/compare

implements Yao, Xu, Liu, "Large Language Model Unlearning" (NeurIPS 2024): gradient ascent on the
bad responses, a random-mismatch loss and forward KL to the original model on normal data.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearn.compare import CompareResult, compare  # eager: `unlearn.compare` stays this function
from unlearn.config import Config, load_config
from unlearn.errors import UnlearnError
from unlearn.version import __version__

if TYPE_CHECKING:
    from unlearn.evaluate.run import EvalResult
    from unlearn.train import RunResult

__all__ = [
    "CompareResult", "Config", "UnlearnError", "compare", "finetune", "load_config", "run", "run_eval", "__version__",
]


def _config(config: Config | str | Path, overrides: list[str] | None) -> Config:
    if isinstance(config, Config):
        if overrides:
            from unlearn.config import config_from_dict

            return config_from_dict(config.to_dict(), overrides, dict(config._origins))
        return config
    return load_config(config, overrides)


def run(
    config: Config | str | Path,
    overrides: list[str] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    console: Any = None,
) -> "RunResult":
    """Unlearn: exactly what `unlearn run CONFIG [overrides] [--overwrite] [--resume]` does."""
    from unlearn.train import train

    cfg = _config(config, overrides)
    return train(cfg, overwrite=overwrite, resume=resume, console=console, evaluator=_evaluator(cfg))


def finetune(
    config: Config | str | Path,
    overrides: list[str] | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    console: Any = None,
) -> "RunResult":
    """Supervised fine-tuning on forget + retain data: what `unlearn finetune` does."""
    from unlearn.train import train

    cfg = _config(config, overrides)
    return train(cfg, overwrite=overwrite, resume=resume, finetune=True, console=console, evaluator=_evaluator(cfg))


def _evaluator(cfg: Config) -> Any:
    """The train.eval_every callback. Built here, not in train.py, because evaluation stands after
    training in the package's layering (train.py never imports unlearn.evaluate)."""
    if not cfg.train.eval_every:
        return None
    from unlearn.evaluate.during import TrainingEvaluator

    return TrainingEvaluator(cfg)


def run_eval(
    config: Config | str | Path,
    overrides: list[str] | None = None,
    *,
    model_dir: str | Path | None = None,
    allow_unfinished: bool = False,
    report_dir: str | Path | None = None,
    write: bool = True,
    original: Any = None,
    console: Any = None,
) -> "EvalResult":
    """Evaluate OUTPUT_DIR/model against the original model: what `unlearn eval` does.

    Returns an EvalResult (.metrics is metrics.json's content, .samples the lines of samples.jsonl,
    .original the original model's outputs, reusable as `original=` for another run of the same
    model and sets). With write=True the report goes to OUTPUT_DIR/eval (or report_dir).
    """
    from unlearn.evaluate.run import evaluate_run
    from unlearn.report import write_report

    cfg = _config(config, overrides)
    result = evaluate_run(
        cfg, model_dir=Path(model_dir) if model_dir else None, allow_unfinished=allow_unfinished,
        original=original, console=console,
    )
    if write:
        write_report(result, Path(report_dir) if report_dir else None)
    return result
