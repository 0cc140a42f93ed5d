"""`unlearn compare`: several unlearning methods on the same data, steps, seed and evaluation; one table.

    unlearn compare CONFIG.yaml [key=value ...] --methods paper,ga,graddiff,npo,simnpo,idk [--overwrite]

    check the config, the method names and OUTPUT_DIR/compare         (nothing written if any fails)
    -> the original model: data and eval sets checked, judge and embedder loaded, outputs
       generated and scored ONCE                                     (a failure here ends it all)
    -> each method: `unlearn run` with the objective replaced by the method's preset into
       OUTPUT_DIR/compare/runs/METHOD, then `unlearn eval` reusing the original model's outputs
       (a failure is recorded in the table, and the next method runs)
    -> OUTPUT_DIR/compare/compare.{md,html,json} and tradeoff.png

A method is a preset name (unlearn.objective.presets). Everything but the objective and output_dir comes from
the config: data, model, LoRA, learning rate, steps, seed, eval section. Term parameters set in the
config's objective (`objective: {simnpo: {weight: 1, delta: 3}}`) carry over to every method that
uses the term; the weights are the preset's.

This module runs the comparison and assembles compare.json's data; the method checks are
comparison/methods.py's, the method process comparison/worker.py's, the files unlearn.report's.

How the numbers are measured, so that they compare honestly:

- Every method, and the original model's generation, runs in a fresh Python process (the same
  interpreter, `python -c ...worker`). One method's memory (the reference copy, allocator caches,
  anything left behind) cannot inflate the next one's peak, and no state (RNG, caches, patched
  modules) carries over. Each process's own output goes to OUTPUT_DIR/compare/logs/METHOD.log.
- train seconds: wall time of `unlearn.run` in that process: model and data loading, every step,
  saving. It leaves out the interpreter start and imports (several seconds, the same for all).
- eval seconds: wall time of `unlearn.run_eval` with the original model's outputs reused: loading
  and generating with the unlearned model, loading the original model (for the fluency of the
  outputs), NLLs and scoring. The original model's own generation and scoring is timed once, in the
  original's row.
- peak memory: on CPU the process's resident-set high-water mark (VmHWM, what getrusage's
  ru_maxrss reports), read at the end of training; it includes the interpreter and libraries (a
  few hundred MB, the same for every method). Before evaluation the mark is reset
  (/proc/self/clear_refs), so the eval peak is evaluation's own (where the reset is refused, it is
  the process's peak so far). On a GPU: torch.cuda.max_memory_allocated, reset before each phase.

Outputs: the table files are written last, each atomically (a temp file renamed into place): a
compare that stops half-way leaves its runs and logs but no table, never a half table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from unlearn.comparison.methods import DEFAULT_METHODS, check_folder, method_config, parse_methods, term_modules
from unlearn.comparison.worker import WORKER, metric_columns
from unlearn.config import Config
from unlearn.errors import UnlearnError
from unlearn.report.format import fmt_mb, objective_text

@dataclass
class CompareResult:
    """What `compare` wrote: `data` is compare.json's content, `files` the paths by name."""

    folder: Path
    data: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


def compare(
    config: Union[Config, str, Path],
    overrides: Optional[list[str]] = None,
    *,
    methods: Union[str, Sequence[str]] = DEFAULT_METHODS,
    overwrite: bool = False,
    audit: bool = False,
    console: Any = None,
) -> CompareResult:
    """Train and evaluate each method (a preset name) on the config's data, steps, seed and eval
    section; write OUTPUT_DIR/compare/. What `unlearn compare` does.

    Raises UnlearnError, with nothing written, for a bad config, an unknown method, an existing
    OUTPUT_DIR/compare without overwrite, or anything that stops the original model's evaluation
    (eval sets, judge, model). A method that fails is recorded (status, phase, one-line error)
    and the others still run. audit=True: each method's evaluation also runs `unlearn audit`
    (eval.audit), and the table gains the worst forgetting rate any attack reached; the original
    model's attacked outputs are generated once and taken from the output cache after.
    """
    from rich.console import Console

    from unlearn.api import as_config
    from unlearn.report import write_compare

    console = console or Console(stderr=True, highlight=False)
    cfg = as_config(config, overrides)
    names = parse_methods(methods)
    out = Path(cfg.output_dir).expanduser().resolve()
    folder = out / "compare"
    check_folder(cfg, folder, overwrite)
    if audit:
        from unlearn.auditing.run import selected_attacks

        selected_attacks(cfg)  # attack and rewrite names, checked before anything runs
    configs = {m: method_config(cfg, m, folder / "runs" / m) for m in names}
    for c in configs.values():
        c.eval.audit = c.eval.audit or audit
    imports = {m: term_modules(c, m) for m, c in configs.items()}
    env = _child_env()

    console.print(f"Comparing {', '.join(names)} on {cfg.model.name}: {cfg.train.max_steps} steps each, "
                  f"seed {cfg.seed}; each in its own process")
    tmp = Path(tempfile.mkdtemp(prefix="unlearn-compare-"))
    keep_tmp = False
    try:
        # ---- the original model: checks everything the methods share, before anything is written
        console.print("original model: checking data and eval sets, generating")
        orig = _spawn(
            {"phase": "original", "config": cfg.to_dict(), "origins": cfg.origins, "imports": [],
             "outputs": str(tmp / "original_outputs.json")},
            tmp, "original", env,
        )
        if orig["status"] == "interrupted":
            raise KeyboardInterrupt
        if orig["status"] != "done":
            if orig.get("error_type") in (None, "UnlearnError"):
                raise UnlearnError(orig.get("error") or "the original model's evaluation failed")
            keep_tmp = True
            raise RuntimeError(f"the original model's evaluation failed: {orig.get('error_type')}: "
                               f"{orig.get('error')} (log: {tmp / 'original.log'})")
        console.print(f"original model: done in {orig['seconds']:.1f} s")

        # ---- from here on, files are written -------------------------------------------------------
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "logs").mkdir(parents=True)
        shutil.move(str(tmp / "original_outputs.json"), folder / "original_outputs.json")
        shutil.move(str(tmp / "original.log"), folder / "logs" / "original.log")
        orig["log"] = str(folder / "logs" / "original.log")

        runs: dict[str, dict[str, Any]] = {}
        for i, m in enumerate(names, 1):
            c = configs[m]
            console.print(f"[{i}/{len(names)}] {m} ({objective_text(c.objective)}): training and evaluating")
            res = _spawn(
                {"phase": "method", "method": m, "config": c.to_dict(), "origins": c.origins,
                 "imports": imports[m], "original": str(folder / "original_outputs.json")},
                tmp, m, env, log=folder / "logs" / f"{m}.log",
            )
            if res["status"] == "interrupted":
                raise KeyboardInterrupt
            runs[m] = _run_record(c, m, res, folder)
            console.print(f"[{i}/{len(names)}] {m}: {_done_text(runs[m])}")
    except BaseException:
        if not keep_tmp:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp, ignore_errors=True)

    data = _assemble(cfg, names, folder, orig, runs)
    files = write_compare(folder, data)
    return CompareResult(folder, data, files)


def _done_text(r: dict[str, Any]) -> str:
    if r["status"] != "done":
        return f"[red]failed[/red] ({r.get('failed_phase')}): {r.get('error')}"
    return (f"done: {r['steps']} steps ({r['stop_reason']}) in {r['train_seconds']:.1f} s, eval "
            f"{r['eval_seconds']:.1f} s, peak {fmt_mb(r.get('train_peak_bytes'))} / {fmt_mb(r.get('eval_peak_bytes'))} MB")


def _child_env() -> dict[str, str]:
    """The method processes see the modules this one sees (unlearn from a source tree, or the
    module that registers a custom term)."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and Path(p).exists()]
    pkg_root = str(Path(__file__).resolve().parents[2])  # the folder holding unlearn/ (src/unlearn/comparison/run.py)
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([pkg_root, *paths]))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    return env


def _spawn(job: dict[str, Any], tmp: Path, name: str, env: dict[str, str], log: Optional[Path] = None) -> dict[str, Any]:
    """Run one job in a fresh process; its result dict (a failure when it died without one)."""
    job_path, result_path = tmp / f"{name}.job.json", tmp / f"{name}.result.json"
    job["result"] = str(result_path)
    job_path.write_text(json.dumps(job))
    log = log or tmp / f"{name}.log"
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(job_path)], stdout=f, stderr=subprocess.STDOUT,
                                env=env, stdin=subprocess.DEVNULL)
        try:
            rc = proc.wait()
        except KeyboardInterrupt:  # Ctrl-C reached the child too: let it finish its step and stop
            proc.wait()
            raise
    return read_result(result_path, rc, log)


def read_result(path: Path, returncode: int, log: Path) -> dict[str, Any]:
    """A worker's result file, or a failure saying how the process ended when it wrote none."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        pass
    if returncode < 0:
        import signal

        try:
            sig = signal.Signals(-returncode).name
        except ValueError:
            sig = str(-returncode)
        how = f"was killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
    else:
        how = f"exited with status {returncode}"
    return {"status": "failed", "phase": "process", "error": f"the process {how} before reporting; see {log}",
            "error_type": "ProcessError"}


def _run_record(cfg: Config, method: str, res: dict[str, Any], folder: Path) -> dict[str, Any]:
    """One method's row: its process's result plus the unlearned values of its own metrics.json."""
    out = Path(cfg.output_dir)
    rec: dict[str, Any] = {
        "status": "done" if res["status"] == "done" else "failed",
        "objective": cfg.objective,
        "output_dir": str(out),
        "report": str(out / "eval" / "report.html"),
        "log": str(folder / "logs" / f"{method}.log"),
        **{k: res.get(k) for k in ("steps", "stop_reason", "train_seconds", "eval_seconds", "train_peak_bytes",
                                   "eval_peak_bytes", "memory", "reused_original")},
        "metrics": {},
    }
    if rec["status"] != "done":
        rec["failed_phase"] = res.get("phase")
        rec["error"] = res.get("error")
        rec["error_type"] = res.get("error_type")
        return rec
    try:
        metrics = json.loads((out / "eval" / "metrics.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        rec.update(status="failed", failed_phase="eval", error=f"{out / 'eval' / 'metrics.json'}: unreadable ({e})",
                   error_type=type(e).__name__)
        return rec
    rec["metrics"], rec["info"] = metric_columns(metrics["metrics"])
    if cfg.eval.audit:
        _audit_columns(rec, out / "audit" / "audit.json")
    return rec


AUDIT_COLUMN = {"unit": "fraction", "higher_is_better": False,
                "description": "the worst forgetting rate any attack of `unlearn audit` reached on the unlearned model"}


def _audit_columns(rec: dict[str, Any], path: Path) -> None:
    """The audit's headline as a column of compare's table: audit.worst_recovered (the first
    forgetting rate's worst value under attack; details and the report's path under rec["audit"])."""
    try:
        audit = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        rec.update(status="failed", failed_phase="audit", error=f"{path}: unreadable ({e})", error_type=type(e).__name__)
        return
    head = audit.get("headline") or []
    if head:
        rec["metrics"]["audit"] = {"worst_recovered": head[0]["value"]}
        rec["info"]["audit"] = {"worst_recovered": AUDIT_COLUMN}
    rec["audit"] = {"headline": head, "report": str(path.parent / "report.html"),
                    "seconds": audit.get("seconds", {}).get("total")}


def _assemble(cfg: Config, names: list[str], folder: Path, orig: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """compare.json's content."""
    from unlearn.version import __version__

    info: dict[str, dict[str, Any]] = {role: dict(ms) for role, ms in orig["info"].items()}
    for r in runs.values():
        for role, ms in r.pop("info", {}).items():
            for name, i in ms.items():
                info.setdefault(role, {}).setdefault(name, i)
    have = {(role, name) for role, ms in info.items() for name in ms}
    from unlearn.evaluate.metrics import plot_axes

    axes = plot_axes()  # the trade-off plot: the first candidate of each axis that the evaluation has
    x = next((k for k in axes["x"] if k in have), None)
    y = next((k for k in axes["y"] if k in have), None)
    return {
        "unlearn_version": __version__,
        "config": cfg.origins.get("", "config"),
        "output_dir": str(Path(cfg.output_dir).expanduser().resolve()),
        "folder": str(folder),
        "model": cfg.model.name,
        "lora": cfg.model.lora is not None,
        "max_steps": cfg.train.max_steps,
        "seed": cfg.seed,
        "methods": names,
        "audit": any(r.get("audit") for r in runs.values()),
        "memory": orig.get("memory"),
        "isolation": "each method and the original model's generation in a fresh process",
        "axes": {"x": ".".join(x) if x else None, "y": ".".join(y) if y else None},
        "sets": orig["sets"],
        "metrics": info,
        "original": {
            "model": cfg.model.name,
            "metrics": orig["metrics"],
            "eval_seconds": orig["seconds"],
            "peak_bytes": orig.get("peak_bytes"),
            "log": orig.get("log"),
        },
        "runs": runs,
    }
