"""`unlearn forget` / `unlearn.forget`: collect, unlearn with the stop rule, evaluate, report.

    OUT/data/        what collect wrote (the bad answers, the model's own retain and normal answers)
    OUT/forget.yaml  the run's whole config: `unlearn run OUT/forget.yaml` runs it again
    OUT/run/         the run (model, best/, eval/ report, ledger.jsonl)
    OUT/forget.json  written last: where the model and the report went, the stop, the key numbers

The hyper-parameters come from hparams.py's table. Training evaluates the val part of the
collected prompts (never trained on) every few steps and stops as soon as their forget rate is at
most the target with utility kept (train.stop_when_forgotten). The model handed back is the one it
stopped at; if no evaluation met both, the best trade-off that did not collapse (train.keep_best),
and the result says so; if every evaluation collapsed, no model is handed back.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from unlearn.errors import UnlearnError
from unlearn.forgetting import hparams
from unlearn.forgetting.collect import NOTHING_TO_UNLEARN, CollectSettings, collect
from unlearn.forgetting.prompts import PromptRow, read_prompts

RETAIN_EVAL = 50
PromptsArg = Union[str, Path, Sequence[str], Sequence[tuple[str, str]]]


@dataclass
class ForgetResult:
    """What `forget` did. `model`: the folder handed back (None: nothing to unlearn, or every
    evaluation collapsed); `met`: the stop rule was met (forgotten with utility kept)."""

    out: Path
    model: Optional[Path]
    met: bool
    message: str
    report: Optional[Path] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def nothing_to_unlearn(self) -> bool:
        return self.message.startswith(NOTHING_TO_UNLEARN)


def as_rows(prompts: PromptsArg, **read: Any) -> list[PromptRow]:
    """Prompt rows from a file path, a list of prompts, or a list of (prompt, bad answer) pairs."""
    if isinstance(prompts, (str, Path)):
        return read_prompts(prompts, **read)
    rows = []
    for i, p in enumerate(prompts):
        where = f"prompts[{i}]"
        if isinstance(p, str):
            rows.append(PromptRow(p, where=where))
        elif isinstance(p, (tuple, list)) and len(p) == 2 and all(isinstance(x, str) for x in p):
            rows.append(PromptRow(p[0], p[1], where=where))
        else:
            raise UnlearnError(f"{where}: expected a prompt or a (prompt, bad answer) pair, got {p!r}")
    if not rows:
        raise UnlearnError("no prompts given")
    return rows


def collect_data(model: str, prompts: PromptsArg, *, out: Union[str, Path] = "runs/collected", judge: Optional[str] = "topic",
                 samples: int = 1, test_prompts: Optional[PromptsArg] = None, examples: Sequence[str] = (),
                 overwrite: bool = False, settings: Optional[CollectSettings] = None, console: Any = None,
                 own_answers: bool = False, **read: Any) -> Any:
    """What `unlearn collect` does, from a file path, a list of prompts or (prompt, bad answer)
    pairs: a Collected (.folder, .summary), or None when no answer was judged bad (nothing written)."""
    settings = settings or CollectSettings()
    settings.judge, settings.samples = judge, samples
    settings.own_answers = settings.own_answers or own_answers
    rows = as_rows(prompts, **read)
    tests = as_rows(test_prompts) if test_prompts is not None else []
    return collect(model, rows, Path(out), settings, test_rows=tests, examples=examples, overwrite=overwrite,
                   console=console)


def n_parameters(model: Any) -> int:
    return sum(p.numel() for p in model.parameters())


def build_config(model_name: str, data: Path, out: Path, summary: dict[str, Any], row: hparams.Row,
                 settings: CollectSettings, target: float) -> dict[str, Any]:
    """The run's config as plain data (written to OUT/forget.yaml)."""
    values = hparams.config_values(row)
    pairs = summary["kind"] == "pairs"
    right = pairs and all(r.get("right_answer") for r in _jsonl(data / "forget.jsonl"))
    test = summary["test_prompts"] > 0
    forget_eval: dict[str, Any] = {}
    if right:  # the target is the right answer (contained in the output: right); closer to the bad one
        # than to the right one = a hallucination (the paper's rule)
        # with --own-answers the forget responses are the model's own wrong answers; the pairs' given
        # bad answers (hallucinated_answer) stay the evaluation's reference
        forget_eval = {"response_field": "right_answer", "target": "desired", "match": "contains",
                       "hallucinated_field": "hallucinated_answer" if summary.get("own_answers") else "response"}
    ev: dict[str, Any] = {
        "sets": ["forget", "forget_test", "retain", "normal"],
        # by prompt (answers to one prompt stay in one part): train / val (the stop rule) / test
        "split": [0.75, 0.25, 0.0] if test else [0.6, 0.2, 0.2],
        "forget": dict(forget_eval),
        "forget_test": {"path": str(data / "test.jsonl")} if test else dict(forget_eval),
        "normal": {"path": str(data / "normal.jsonl")},
        # the model's own answers: 50 say whether it still gives them (all of them would double the time)
        "retain": {"path": str(data / "retain.jsonl"), "limit": RETAIN_EVAL},
        "max_new_tokens": settings.max_new_tokens,
        "batch_size": settings.batch_size,
        "fast_examples": 12,
        # Utility is judged by the normal-prompt cosine and collapse. Retain accuracy here is the exact
        # reproduction (BLEU >= 30) of the model's own 48-token answers, which any update perturbs
        # (it was 44-56 % on the policy example while the cosine stayed near 0.8): reported, not a gate.
        "verdict": {"forget_target": target, "retain_ratio": 0.0},
        "trade_off": {"forget_leak_rate": -1.0, "retain_accuracy": 0.5, "normal_cosine": 1.0},
        **settings.eval,
    }
    if right:
        ev["trade_off"] = {"forget_leak_rate": 1.0, "forget_hallucination_rate": -1.0, "retain_accuracy": 0.5,
                           "normal_cosine": 1.0}
    if not pairs:
        ev["judge"] = summary["judge"]
        ev["trade_off"]["forget_harmful_rate"] = -1.0
    return {
        "model": {"name": model_name, "lora": values["lora"]},
        "data": {"template": summary["template"], "forget": {"path": str(data / "forget.jsonl")},
                 "retain": {"path": str(data / "retain.jsonl")}, "mismatch": {"k": 2}, "max_length": 256},
        "objective": values["objective"],
        "train": values["train"],
        "eval": ev,
        "output_dir": str(out / "run"),
        "seed": settings.seed,
    }


def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def forget(
    model: str,
    prompts: PromptsArg,
    *,
    out: Union[str, Path] = "runs/forget",
    judge: Optional[str] = "topic",
    samples: int = 1,
    lora: bool = True,
    target: float = 0.05,
    test_prompts: Optional[PromptsArg] = None,
    examples: Sequence[str] = (),
    overrides: Union[Sequence[str], dict[str, Any]] = (),
    overwrite: bool = False,
    console: Any = None,
    settings: Optional[CollectSettings] = None,
    own_answers: bool = False,
    **read: Any,
) -> ForgetResult:
    """From prompts (or (prompt, bad answer) pairs) to a model that no longer gives those answers,
    with its evaluation report: what `unlearn forget` does (see the module docstring).

    judge: how a bad answer is told ('topic', 'contains' with settings.eval['judge_strings'],
    'refusal', 'classifier:PATH', ...); pairs need none. own_answers: with pairs that carry right
    answers, forget the model's own answers that miss the right answer (collect.WRONG_JUDGE)
    instead of the given bad ones, which still score the evaluation. overrides: config keys for the run, e.g.
    ["train.max_steps=30"] or {"train.max_steps": 30}."""
    from rich.console import Console

    from unlearn.api import as_config, run, run_eval
    from unlearn.files import refuse_dangerous_overwrite, write_text_atomic

    console = console or Console(stderr=True)
    t0 = time.time()
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite:
        raise UnlearnError(f"{out} exists; pass --overwrite to replace it")
    settings = settings or CollectSettings()
    settings.judge, settings.samples = judge, samples
    settings.own_answers = settings.own_answers or own_answers
    rows = as_rows(prompts, **read)
    test_rows = as_rows(test_prompts) if test_prompts is not None else []
    if not 0 <= target <= 1:
        raise UnlearnError(f"--target must be a fraction in [0, 1], got {target}")
    if test_rows and all(r.response is not None for r in rows):
        raise UnlearnError("--test-prompts: with (prompt, bad answer) pairs the unseen set is a held-out part of "
                           "the pairs (prompts alone would need a judge); leave --test-prompts out")

    from unlearn.forgetting.collect import load_for_collect

    loaded = load_for_collect(model)
    row = hparams.pick(n_parameters(loaded[0]), lora)
    tmp = out.parent / f".{out.name}.collect-{int(t0)}"
    try:
        collected = collect(model, rows, tmp, settings, test_rows=test_rows, examples=examples,
                            overwrite=True, console=console, loaded=loaded)
    finally:
        del loaded
        gc.collect()
    if collected is None:
        msg = f"{NOTHING_TO_UNLEARN}: the judge ({judge}) called no answer to the {len(rows)} prompts bad"
        console.print(f"[yellow]{msg}[/yellow]")
        return ForgetResult(out, None, False, msg)
    if out.exists():
        refuse_dangerous_overwrite(out, [Path(p) for p in (prompts, test_prompts) if isinstance(p, (str, Path))])
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (tmp).rename(out / "data")
    t_collect = time.time() - t0

    import yaml

    cfg_data = build_config(model, out / "data", out, collected.summary, row, settings, target)
    write_text_atomic(out / "forget.yaml", _header(model, row) + yaml.safe_dump(cfg_data, sort_keys=False))
    if isinstance(overrides, dict):
        overrides = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
    cfg = as_config(out / "forget.yaml", list(overrides))
    console.print(f"[dim]forget: {collected.bad} bad answers to {collected.summary['forget']['prompts']} prompts; "
                  f"unlearning ({'LoRA' if row.lora else 'full'}, lr {row.lr}, at most {row.max_steps} steps, "
                  f"{row.source})[/dim]")
    t1 = time.time()
    result = run(cfg, console=console)
    t_train = time.time() - t1
    run_dir = Path(cfg.output_dir)
    met = result.stop_reason.startswith("forgotten")
    best = run_dir / "best" / "best.json"
    if met:
        handed, report_dir = run_dir / "model", None
        message = f"forgotten with utility kept ({result.stop_reason})"
    elif best.exists():
        step = json.loads(best.read_text())["step"]
        handed, report_dir = run_dir / "best" / "model", run_dir / "best" / "eval"
        message = (f"no evaluation met both the target ({target}) and utility; handing back the best trade-off "
                   f"among those that kept utility (step {step})")
    else:
        handed, report_dir = None, None
        message = ("every evaluation lost utility or collapsed: no model is handed back (the report shows the "
                   "final one)")
    t2 = time.time()
    ev = run_eval(cfg, model_dir=handed if handed is not None and handed != run_dir / "model" else None,
                  report_dir=report_dir, console=console)
    t_eval = time.time() - t2
    report = (report_dir or run_dir / "eval") / "report.html"
    summary = {
        "model_in": model, "model_out": str(handed) if handed else None, "met": met, "message": message,
        "stop_reason": result.stop_reason, "steps": result.steps, "report": str(report),
        "data": str(out / "data"), "config": str(out / "forget.yaml"), "hparams": row.__dict__,
        "verdict": ev.metrics.get("verdict"),
        "seconds": {"collect": round(t_collect, 1), "train": round(t_train, 1), "eval": round(t_eval, 1),
                    "total": round(time.time() - t0, 1)},
    }
    write_text_atomic(out / "forget.json", json.dumps(summary, indent=2, default=str) + "\n")
    return ForgetResult(out, handed, met, message, report, ev.metrics, summary)


def _header(model: str, row: hparams.Row) -> str:
    return (f"# Written by `unlearn forget` for {model}. Run it again with: unlearn run THIS_FILE --overwrite\n"
            f"# Hyper-parameters: {'LoRA' if row.lora else 'full fine-tuning'} row of "
            f"unlearn.forgetting.hparams ({row.source}).\n")
