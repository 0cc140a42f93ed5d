"""The process each method (and the original model's generation) runs in: `python -c WORKER JOB`.

The protocol: the parent writes a job file (JSON: phase, config, origins, modules to import, where
to put the result); the worker runs it and always writes a result file (status done, failed or
interrupted, the phase it reached, timings, peak memory, the metrics), then exits 0, 1 or 130.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from unlearn.config import Config, config_from_dict
from unlearn.errors import UnlearnError
from unlearn.memory import PeakMemory

# What a method process runs: worker() below, with the job file as its argument.
WORKER = "import sys; from unlearn.comparison.worker import worker; sys.exit(worker(sys.argv[1]))"


def metric_columns(table: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An evaluation's metrics table ({set: {metric: row}}) as ({set: {metric: unlearned value}},
    {set: {metric: unit, direction, description}}): what compare.json keeps of it."""
    values = {role: {name: row["unlearned"] for name, row in rows.items()} for role, rows in table.items()}
    info = {role: {name: {"unit": row["unit"], "higher_is_better": row["higher_is_better"],
                          "description": row["description"]} for name, row in rows.items()}
            for role, rows in table.items()}
    return values, info


def worker(job_path: str) -> int:
    """Entry point of a method process: run the job, write its result file (always), return the
    exit status (0 done, 1 failed, 130 interrupted)."""
    import importlib
    import traceback

    from rich.console import Console

    from unlearn.errors import RunInterrupted, one_line
    from unlearn.files import write_text_atomic

    from unlearn.memory import keep_freed_memory

    keep_freed_memory()  # a process of the command line, as `unlearn run` is
    job = json.loads(Path(job_path).read_text())
    result: dict[str, Any] = {"status": "failed", "phase": "setup"}
    console = Console(stderr=True, highlight=False, width=120)
    try:
        for module in job.get("imports", []):
            importlib.import_module(module)
        cfg = config_from_dict(job["config"], [], job["origins"])
        if job["phase"] == "original":
            _original_phase(cfg, job, result, console)
        else:
            _method_phase(cfg, job, result, console)
        result["status"] = "done"
    except (RunInterrupted, KeyboardInterrupt) as e:
        result.update(status="interrupted", error=one_line(e) if str(e) else "interrupted")
    except BaseException as e:  # recorded in the table; the next method still runs
        result.update(error=one_line(e), error_type=type(e).__name__)
        if not isinstance(e, UnlearnError):
            traceback.print_exc()
        console.print(f"error ({result['phase']}): {one_line(e)}")
    finally:
        write_text_atomic(Path(job["result"]), json.dumps(result) + "\n")
    return {"done": 0, "interrupted": 130}.get(result["status"], 1)


def _original_phase(cfg: Config, job: dict[str, Any], result: dict[str, Any], console: Any) -> None:
    """Check the data and eval sets, load the judge and embedder, generate with the original model
    and score its outputs (against themselves, for the similarity metrics); save the outputs."""
    import dataclasses

    from unlearn.data import load_source
    from unlearn.evaluate.cache import OutputCache
    from unlearn.evaluate.run import (
        cached_original, evaluate_outputs, free_model, pick_device, prepare, run_model,
    )
    from unlearn.models import load_model

    result["phase"] = "eval"
    t0 = time.time()
    device = pick_device(cfg)
    peak = PeakMemory(device)
    result["memory"] = peak.kind
    peak.reset()
    for role in ("forget", "retain", "mismatch"):
        src = getattr(cfg.data, role)
        if src is not None and (src.path or src.dataset):
            load_source(src, role)
    tokenizer, sets, judge, embedder, similarity = prepare(cfg, device)
    key, original = cached_original(cfg, sets, device)  # the same original on the same sets: once
    result["original_cached"] = original is not None and bool(original.fluency_nll)
    if not result["original_cached"]:
        model, _ = load_model(cfg.model, tokenizer)
        model.to(device)
        console.print(f"generating on {', '.join(f'{r} ({len(s.items)})' for r, s in sets.items())}")
        original = run_model(model, tokenizer, cfg, sets, "original", cfg.model.name, own_fluency=True)
        free_model(model)
        if key is not None:
            OutputCache().put(key, dataclasses.asdict(original))
    else:
        console.print("the original model's outputs: from the output cache")
    itself = dataclasses.replace(original, label="unlearned")
    table, _ = evaluate_outputs(cfg, sets, original, itself, judge=judge, embedder=embedder, similarity=similarity)
    # The "unlearned" column of the original against itself: every metric, the similarity ones too.
    result["metrics"], result["info"] = metric_columns(table)
    result["sets"] = {role: {"n": len(s.items), "source": s.source, "kind": s.kind} for role, s in sets.items()}
    Path(job["outputs"]).write_text(json.dumps(dataclasses.asdict(original)))
    result["seconds"] = round(time.time() - t0, 2)
    result["peak_bytes"] = peak.read()


def _method_phase(cfg: Config, job: dict[str, Any], result: dict[str, Any], console: Any) -> None:
    """unlearn run, then unlearn eval with the original model's outputs reused."""
    from unlearn.api import run, run_eval
    from unlearn.evaluate.run import ModelOutputs, pick_device

    device = pick_device(cfg)
    peak = PeakMemory(device)
    result["memory"] = peak.kind
    result["phase"] = "train"
    peak.reset()
    t0 = time.time()
    try:
        unlearned = run(cfg, console=console)
    finally:
        result["train_seconds"] = round(time.time() - t0, 2)
        result["train_peak_bytes"] = peak.read()
        _steps_from_manifest(cfg, result)
    result["steps"], result["stop_reason"] = unlearned.steps, unlearned.stop_reason

    result["phase"] = "eval"
    original = ModelOutputs(**json.loads(Path(job["original"]).read_text()))
    peak.reset()
    t0 = time.time()
    try:
        ev = run_eval(cfg, original=original, console=console)
    finally:
        result["eval_seconds"] = round(time.time() - t0, 2)
        result["eval_peak_bytes"] = peak.read()
    result["reused_original"] = ev.original is original


def _steps_from_manifest(cfg: Config, result: dict[str, Any]) -> None:
    """Steps and stop reason as run.json records them (also for a run that failed)."""
    try:
        manifest = json.loads((Path(cfg.output_dir) / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    result["steps"] = manifest.get("steps")
    result["stop_reason"] = manifest.get("stop_reason") or manifest.get("reason")
