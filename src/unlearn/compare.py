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

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from unlearn.config import Config, config_from_dict, load_config
from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics import plot_axes
from unlearn.memory import PeakMemory
from unlearn.objective.presets import PRESETS

DEFAULT_METHODS = ("paper", "ga", "graddiff", "npo", "simnpo", "idk")
FILES = ("compare.md", "compare.html", "compare.json", "tradeoff.png")
MB = 2**20

# What a method process runs: the worker below, with the job file as its argument.
_WORKER = "import sys; from unlearn.compare import worker; sys.exit(worker(sys.argv[1]))"


@dataclass
class CompareResult:
    """What `compare` wrote: `data` is compare.json's content, `files` the paths by name."""

    folder: Path
    data: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Checks before anything runs


def parse_methods(methods: Union[str, Sequence[str]]) -> list[str]:
    """Method names from 'paper,ga' or a list; UnlearnError for an unknown, repeated or empty one."""
    items = methods.split(",") if isinstance(methods, str) else [m for s in methods for m in str(s).split(",")]
    names = [m.strip() for m in items]
    if not names or any(not m for m in names):
        raise UnlearnError(f"--methods: expected comma-separated preset names, got '{','.join(items)}'; "
                           f"presets: {', '.join(PRESETS)}")
    unknown = [m for m in names if m not in PRESETS]
    if unknown:
        raise UnlearnError(f"--methods: unknown method(s) {', '.join(unknown)}; methods (objective presets): "
                           f"{', '.join(PRESETS)}")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise UnlearnError(f"--methods: {', '.join(repeated)} given more than once")
    return names


def method_objective(cfg: Config, method: str) -> dict[str, Any]:
    """The preset's weights, with the parameters the config gives any of its terms."""
    out: dict[str, Any] = {}
    for term, weight in PRESETS[method].items():
        spec = cfg.objective.get(term)
        params = {k: v for k, v in spec.items() if k != "weight"} if isinstance(spec, dict) else {}
        out[term] = {"weight": weight, **params} if params else weight
    return out


def method_config(cfg: Config, method: str, output_dir: Path) -> Config:
    """cfg with the objective of `method` and its own output_dir (checked like any config)."""
    data = cfg.to_dict()
    data["objective"] = method_objective(cfg, method)
    data["output_dir"] = str(output_dir)
    origins = {k: v for k, v in cfg._origins.items()
               if not (k.startswith("objective") or k.startswith("=objective") or k == "output_dir")}
    origins["objective"] = f"--methods {method}"
    origins["output_dir"] = "unlearn compare"
    return config_from_dict(data, [], origins)


def _term_modules(cfg: Config, method: str) -> list[str]:
    """Check the method's objective; return the modules its process must import to know its terms:
    those registered outside unlearn (one registered in __main__ cannot be found from there)."""
    from unlearn.objective import Objective, available_terms

    Objective(cfg.objective, where=cfg.origin)  # term names and parameters, checked here for every method
    terms = available_terms()
    modules = []
    for name in cfg.objective:
        mod = terms[name].fn.__module__ if name in terms else "unlearn"
        if mod == "__main__":
            raise UnlearnError(
                f"--methods {method}: loss term '{name}' is registered in __main__; each method runs in its "
                "own process, so register it in an importable module"
            )
        if not mod.startswith("unlearn.") and mod not in modules:
            modules.append(mod)
    return modules


def check_folder(cfg: Config, folder: Path, overwrite: bool) -> None:
    from unlearn.files import check_writable, refuse_dangerous_overwrite
    from unlearn.train import run_inputs

    if folder.exists() or folder.is_symlink():
        if not folder.is_dir() or folder.is_symlink():
            raise UnlearnError(f"'{folder}' exists and is not a folder; remove it or choose another output_dir")
        if not overwrite:
            raise UnlearnError(f"'{folder}' exists (an earlier comparison); pass --overwrite to replace it")
        refuse_dangerous_overwrite(folder, run_inputs(cfg, with_eval=True))
    check_writable(folder)


# --------------------------------------------------------------------------------------------
# The comparison


def compare(
    config: Union[Config, str, Path],
    overrides: Optional[list[str]] = None,
    *,
    methods: Union[str, Sequence[str]] = DEFAULT_METHODS,
    overwrite: bool = False,
    console: Any = None,
) -> CompareResult:
    """Train and evaluate each method (a preset name) on the config's data, steps, seed and eval
    section; write OUTPUT_DIR/compare/. What `unlearn compare` does.

    Raises UnlearnError, with nothing written, for a bad config, an unknown method, an existing
    OUTPUT_DIR/compare without overwrite, or anything that stops the original model's evaluation
    (eval sets, judge, model). A method that fails is recorded (status, phase, one-line error)
    and the others still run.
    """
    from rich.console import Console

    console = console or Console(stderr=True, highlight=False)
    if isinstance(config, Config):
        cfg = config_from_dict(config.to_dict(), overrides, dict(config._origins)) if overrides else config
    else:
        cfg = load_config(config, overrides)
    names = parse_methods(methods)
    out = Path(cfg.output_dir).expanduser().resolve()
    folder = out / "compare"
    check_folder(cfg, folder, overwrite)
    configs = {m: method_config(cfg, m, folder / "runs" / m) for m in names}
    imports = {m: _term_modules(c, m) for m, c in configs.items()}
    env = _child_env()

    console.print(f"Comparing {', '.join(names)} on {cfg.model.name}: {cfg.train.max_steps} steps each, "
                  f"seed {cfg.seed}; each in its own process")
    tmp = Path(tempfile.mkdtemp(prefix="unlearn-compare-"))
    keep_tmp = False
    try:
        # ---- the original model: checks everything the methods share, before anything is written
        console.print("original model: checking data and eval sets, generating")
        orig = _spawn(
            {"phase": "original", "config": cfg.to_dict(), "origins": dict(cfg._origins), "imports": [],
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
                {"phase": "method", "method": m, "config": c.to_dict(), "origins": dict(c._origins),
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
    files = write_outputs(folder, data)
    return CompareResult(folder, data, files)


def objective_text(objective: dict[str, Any]) -> str:
    parts = []
    for term, spec in objective.items():
        w = spec["weight"] if isinstance(spec, dict) else spec
        params = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "weight") if isinstance(spec, dict) else ""
        parts.append(f"{term} {w:g}" + (f" ({params})" if params else ""))
    return " + ".join(parts)


def _done_text(r: dict[str, Any]) -> str:
    if r["status"] != "done":
        return f"[red]failed[/red] ({r.get('failed_phase')}): {r.get('error')}"
    return (f"done: {r['steps']} steps ({r['stop_reason']}) in {r['train_seconds']:.1f} s, eval "
            f"{r['eval_seconds']:.1f} s, peak {_mb(r.get('train_peak_bytes'))} / {_mb(r.get('eval_peak_bytes'))} MB")


def _child_env() -> dict[str, str]:
    """The method processes see the modules this one sees (unlearn from a source tree, or the
    module that registers a custom term)."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and Path(p).exists()]
    pkg_root = str(Path(__file__).resolve().parents[1])
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
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(job_path)], stdout=f, stderr=subprocess.STDOUT,
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
    rec["metrics"] = {role: {name: row["unlearned"] for name, row in rows.items()}
                      for role, rows in metrics["metrics"].items()}
    rec["info"] = {role: {name: _info(row) for name, row in rows.items()} for role, rows in metrics["metrics"].items()}
    return rec


def _info(row: dict[str, Any]) -> dict[str, Any]:
    return {"unit": row["unit"], "higher_is_better": row["higher_is_better"], "description": row["description"]}


def _assemble(cfg: Config, names: list[str], folder: Path, orig: dict[str, Any], runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """compare.json's content."""
    from unlearn.version import __version__

    info: dict[str, dict[str, Any]] = {role: dict(ms) for role, ms in orig["info"].items()}
    for r in runs.values():
        for role, ms in r.pop("info", {}).items():
            for name, i in ms.items():
                info.setdefault(role, {}).setdefault(name, i)
    have = {(role, name) for role, ms in info.items() for name in ms}
    axes = plot_axes()  # the trade-off plot: the first candidate of each axis that the evaluation has
    x = next((k for k in axes["x"] if k in have), None)
    y = next((k for k in axes["y"] if k in have), None)
    return {
        "unlearn_version": __version__,
        "config": cfg._origins.get("", "config"),
        "output_dir": str(Path(cfg.output_dir).expanduser().resolve()),
        "folder": str(folder),
        "model": cfg.model.name,
        "lora": cfg.model.lora is not None,
        "max_steps": cfg.train.max_steps,
        "seed": cfg.seed,
        "methods": names,
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


# --------------------------------------------------------------------------------------------
# The method process


def worker(job_path: str) -> int:
    """Entry point of a method process: run the job, write its result file (always), return the
    exit status (0 done, 1 failed, 130 interrupted)."""
    import importlib
    import traceback

    from rich.console import Console

    from unlearn.errors import RunInterrupted
    from unlearn.errors import one_line
    from unlearn.files import write_text_atomic

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
    from unlearn.evaluate.run import add_fluency, evaluate_outputs, free_model, pick_device, prepare, run_model
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
    model, _ = load_model(cfg.model, tokenizer)
    model.to(device)
    console.print(f"generating on {', '.join(f'{r} ({len(s.items)})' for r, s in sets.items())}")
    original = run_model(model, tokenizer, cfg, sets, "original", cfg.model.name)
    add_fluency(model, tokenizer, cfg, sets, original)
    free_model(model)
    itself = dataclasses.replace(original, label="unlearned")
    table, _ = evaluate_outputs(cfg, sets, original, itself, judge=judge, embedder=embedder, similarity=similarity)
    # The "unlearned" column of the original against itself: every metric, the similarity ones too.
    result["metrics"] = {role: {name: row["unlearned"] for name, row in rows.items()} for role, rows in table.items()}
    result["info"] = {role: {name: _info(row) for name, row in rows.items()} for role, rows in table.items()}
    result["sets"] = {role: {"n": len(s.items), "source": s.source, "kind": s.kind} for role, s in sets.items()}
    Path(job["outputs"]).write_text(json.dumps(dataclasses.asdict(original)))
    result["seconds"] = round(time.time() - t0, 2)
    result["peak_bytes"] = peak.read()


def _method_phase(cfg: Config, job: dict[str, Any], result: dict[str, Any], console: Any) -> None:
    """unlearn run, then unlearn eval with the original model's outputs reused."""
    import unlearn
    from unlearn.evaluate.run import ModelOutputs, pick_device

    device = pick_device(cfg)
    peak = PeakMemory(device)
    result["memory"] = peak.kind
    result["phase"] = "train"
    peak.reset()
    t0 = time.time()
    try:
        run = unlearn.run(cfg, console=console)
    finally:
        result["train_seconds"] = round(time.time() - t0, 2)
        result["train_peak_bytes"] = peak.read()
        _steps_from_manifest(cfg, result)
    result["steps"], result["stop_reason"] = run.steps, run.stop_reason

    result["phase"] = "eval"
    original = ModelOutputs(**json.loads(Path(job["original"]).read_text()))
    peak.reset()
    t0 = time.time()
    try:
        ev = unlearn.run_eval(cfg, original=original, console=console)
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


# --------------------------------------------------------------------------------------------
# The table


def columns(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(set, metric) of every metric, in evaluation order."""
    return [(role, name) for role, ms in data["metrics"].items() for name in ms]


def _mb(n: Optional[int]) -> str:
    return "–" if n is None else f"{n / MB:.0f}"


def _secs(s: Optional[float]) -> str:
    return "–" if s is None else f"{s:.1f}"


def table_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per method (the original model first), every cell as text; `best` marks the metric
    columns where the row holds the best value among the methods that finished."""
    from unlearn.report import fmt

    cols = columns(data)
    done = [r for r in data["runs"].values() if r["status"] == "done"]
    best: dict[tuple[str, str], float] = {}
    for role, name in cols:
        i = data["metrics"][role][name]
        vals = [r["metrics"].get(role, {}).get(name) for r in done]
        vals = [v for v in vals if v is not None]
        if len(vals) > 1 and len(set(vals)) > 1:
            best[(role, name)] = max(vals) if i["higher_is_better"] else min(vals)
    o = data["original"]
    rows = [{
        "method": "original model", "objective": "", "status": "original", "steps": "0", "stop": "",
        "train_s": "–", "eval_s": _secs(o["eval_seconds"]), "peak_mb": f"– / {_mb(o.get('peak_bytes'))}",
        "values": [fmt(o["metrics"].get(role, {}).get(name), data["metrics"][role][name]["unit"]) for role, name in cols],
        "best": [False] * len(cols), "error": "", "report": None,
    }]
    for m, r in data["runs"].items():
        vals = [r["metrics"].get(role, {}).get(name) for role, name in cols]
        rows.append({
            "method": m,
            "objective": objective_text(r["objective"]),
            "status": r["status"] if r["status"] == "done" else f"failed ({r.get('failed_phase')})",
            "steps": "–" if r.get("steps") is None else str(r["steps"]),
            "stop": r.get("stop_reason") or "",
            "train_s": _secs(r.get("train_seconds")),
            "eval_s": _secs(r.get("eval_seconds")),
            "peak_mb": f"{_mb(r.get('train_peak_bytes'))} / {_mb(r.get('eval_peak_bytes'))}",
            "values": [fmt(v, data["metrics"][role][name]["unit"]) for v, (role, name) in zip(vals, cols)],
            "best": [v is not None and best.get(c) == v for v, c in zip(vals, cols)],
            "error": r.get("error") or "",
            "report": r["report"] if r["status"] == "done" else None,
        })
    return rows


def _header(data: dict[str, Any], role: str, name: str) -> str:
    return f"{role} {name} {'↑' if data['metrics'][role][name]['higher_is_better'] else '↓'}"


def _memory_text(data: dict[str, Any]) -> str:
    if data.get("memory") == "cuda_max_allocated":
        return "GPU memory allocated at peak (torch.cuda.max_memory_allocated), training / evaluation"
    return "resident-set high-water mark of the method's own process (VmHWM), training / evaluation"


def _axis_label(key: Optional[str]) -> str:
    """'forget.leak_rate' -> 'forget: leak rate'."""
    if not key:
        return "none"
    role, name = key.split(".", 1)
    return f"{role}: {name.replace('_', ' ')}"


def render_markdown(data: dict[str, Any]) -> str:
    from unlearn.report import _md_cell

    cols = columns(data)
    rows = table_rows(data)
    lines = [
        "# Unlearning methods compared",
        "",
        f"- model: `{data['model']}`{' (LoRA)' if data['lora'] else ''}; each method {data['max_steps']} steps "
        f"(at most), seed {data['seed']}, the same data and evaluation; config `{data['config']}`",
        "- sets: " + ", ".join(f"{r} ({v['n']}, {v['source']})" for r, v in data["sets"].items()),
        f"- peak MB: {_memory_text(data)}; seconds: training (load, steps, save) and evaluation, each "
        "method in a fresh process",
        f"- trade-off plot: `tradeoff.png` (x: {_axis_label(data['axes']['x'])}, y: {_axis_label(data['axes']['y'])})",
        "- ↑ higher is better, ↓ lower is better; **bold**: the best method in the column",
        "",
        "| method | objective | status | steps | stop | train s | eval s | peak MB | "
        + " | ".join(_header(data, r, n) for r, n in cols) + " | error |",
        "|" + "---|" * (9 + len(cols)),
    ]
    for row in rows:
        vals = [f"**{v}**" if b else v for v, b in zip(row["values"], row["best"])]
        cells = [row["method"], row["objective"], row["status"], row["steps"], row["stop"], row["train_s"],
                 row["eval_s"], row["peak_mb"], *vals, row["error"]]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    lines += ["", "Each method's run, evaluation report and log:", ""]
    for m, r in data["runs"].items():
        lines.append(f"- `{m}`: `{r['output_dir']}`" + (f", report `{r['report']}`" if r["status"] == "done" else "")
                     + f", log `{r['log']}`")
    lines += ["", "Metrics:", ""]
    seen = set()
    for role, name in cols:
        if name not in seen:
            seen.add(name)
            lines.append(f"- `{name}`: {data['metrics'][role][name]['description']}")
    return "\n".join(lines) + "\n"


def render_html(data: dict[str, Any], png: Optional[bytes]) -> str:
    from unlearn.report import CSS, _e

    cols = columns(data)
    rows = table_rows(data)
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Unlearning methods compared: {_e(Path(data['output_dir']).name)}</title>",
        f"<style>{CSS}tr.failed td{{background:#fdecea}}tr.original td{{background:#f4f6f8}}td.best{{font-weight:700}}"
        "table.compare{font-size:.82em}td.err{max-width:280px;font-size:.85em;color:#8a1c1c}"
        ".scroll{overflow-x:auto}</style></head><body>",
        "<h1>Unlearning methods compared</h1><div class='meta'><p>",
        f"Model <code>{_e(data['model'])}</code>{' (LoRA)' if data['lora'] else ''}; each method "
        f"{_e(data['max_steps'])} steps (at most), seed {_e(data['seed'])}, the same data and evaluation; config "
        f"<code>{_e(data['config'])}</code>.<br>",
        "Sets: " + "; ".join(f"<b>{_e(r)}</b> {v['n']} examples from <code>{_e(v['source'])}</code>"
                            for r, v in data["sets"].items()) + ".<br>",
        f"Peak MB: {_e(_memory_text(data))}. Seconds: training (load, steps, save) and evaluation, each method "
        "in a fresh process. ↑ higher is better, ↓ lower is better; bold: the best method in the column.",
        "</p></div><h2>Summary</h2>",
        "<div class='scroll'><table class='compare'><tr><th>method</th><th>objective</th><th>status</th><th>error</th>"
        "<th>steps</th><th>stop</th><th>train s</th><th>eval s</th><th>peak MB</th>"
        + "".join(f"<th title='{_e(data['metrics'][r][n]['description'])}'>{_e(_header(data, r, n))}</th>" for r, n in cols)
        + "</tr>",
    ]
    for row in rows:
        cls = "original" if row["status"] == "original" else ("" if row["status"] == "done" else "failed")
        method = _e(row["method"])
        if row["report"]:
            rel = os.path.relpath(row["report"], data["folder"])
            method = f"<a href='{_e(rel)}'>{method}</a>"
        cells = "".join(f"<td class='num{' best' if b else ''}'>{_e(v)}</td>" for v, b in zip(row["values"], row["best"]))
        parts.append(
            f"<tr class='{cls}'><td>{method}</td><td>{_e(row['objective'])}</td><td>{_e(row['status'])}</td>"
            f"<td class='err'>{_e(row['error'])}</td><td class='num'>{_e(row['steps'])}</td>"
            f"<td class='small'>{_e(row['stop'])}</td><td class='num'>{_e(row['train_s'])}</td>"
            f"<td class='num'>{_e(row['eval_s'])}</td><td class='num'>{_e(row['peak_mb'])}</td>{cells}</tr>"
        )
    parts.append("</table></div>")
    if png is not None:
        parts += ["<h2>Trade-off</h2>",
                  f"<p class='small'>x: {_e(_axis_label(data['axes']['x']))} (lower is better); "
                  f"y: {_e(_axis_label(data['axes']['y']))} (higher is better). Failed methods have no point.</p>",
                  f"<img alt='trade-off plot' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"]
    else:
        parts.append("<p class='small'>No trade-off plot: no finished method, or the evaluation has no forget "
                     "leak/harmful rate or no retain accuracy/normal similarity.</p>")
    parts.append("<h2>Metrics</h2><ul>")
    seen = set()
    for role, name in cols:
        if name not in seen:
            seen.add(name)
            parts.append(f"<li><b>{_e(name)}</b>: {_e(data['metrics'][role][name]['description'])}</li>")
    parts.append(f"</ul><p class='small'>unlearn {_e(data['unlearn_version'])}; each method's run, report and log "
                 f"under <code>{_e(data['folder'])}</code>.</p></body></html>")
    return "\n".join(parts)


def tradeoff_png(data: dict[str, Any]) -> Optional[bytes]:
    """The forget leak (or harmful) rate against utility, one labelled point per finished method
    and the original model. None when an axis is missing or no method finished."""
    import io

    xk, yk = data["axes"]["x"], data["axes"]["y"]
    if not xk or not yk:
        return None
    (xr, xn), (yr, yn) = xk.split(".", 1), yk.split(".", 1)

    def point(metrics: dict[str, Any]) -> Optional[tuple[float, float]]:
        x, y = metrics.get(xr, {}).get(xn), metrics.get(yr, {}).get(yn)
        return None if x is None or y is None else (x, y)

    runs = [(m, point(r["metrics"])) for m, r in data["runs"].items() if r["status"] == "done"]
    runs = [(m, p) for m, p in runs if p is not None]
    if not runs:
        return None
    xu, yu = data["metrics"][xr][xn]["unit"], data["metrics"][yr][yn]["unit"]
    sx, sy = (100.0 if xu == "fraction" else 1.0), (100.0 if yu == "fraction" else 1.0)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    orig = point(data["original"]["metrics"])
    if orig is not None:
        ax.scatter([orig[0] * sx], [orig[1] * sy], marker="*", s=220, color="#888888", zorder=3, label="original model")
        ax.annotate("original", (orig[0] * sx, orig[1] * sy), textcoords="offset points", xytext=(8, 6),
                    fontsize=9, color="#555555")
    colors = plt.get_cmap("tab10")
    labelled: dict[tuple[float, float], int] = {} if orig is None else {(round(orig[0], 3), round(orig[1], 3)): 1}
    for i, (m, (x, y)) in enumerate(runs):
        ax.scatter([x * sx], [y * sy], s=60, color=colors(i % 10), zorder=4, label=m)
        at = (round(x, 3), round(y, 3))  # methods at the same point: their labels stack upwards
        k = labelled.get(at, 0)
        labelled[at] = k + 1
        ax.annotate(m, (x * sx, y * sy), textcoords="offset points", xytext=(8, 6 + 12 * k), fontsize=9,
                    color=colors(i % 10))
    if xu == "fraction":
        ax.set_xlim(-5, 105)
    if yu == "fraction":
        ax.set_ylim(-5, 105)
    ax.set_xlabel(f"{_axis_label(xk)}{' (%)' if xu == 'fraction' else ''}  (lower is better)")
    ax.set_ylabel(f"{_axis_label(yk)}{' (%)' if yu == 'fraction' else ''}  (higher is better)")
    ax.set_title(f"{data['model']}: {data['max_steps']} steps per method, seed {data['seed']}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(folder: Path, data: dict[str, Any]) -> dict[str, Path]:
    """tradeoff.png, compare.html, compare.md, then compare.json: each file whole or absent."""
    from unlearn.files import write_bytes_atomic

    files: dict[str, Path] = {}
    png = tradeoff_png(data)
    if png is not None:
        files["tradeoff.png"] = folder / "tradeoff.png"
        write_bytes_atomic(files["tradeoff.png"], png)
    for name, text in (("compare.html", render_html(data, png)), ("compare.md", render_markdown(data)),
                       ("compare.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")):
        files[name] = folder / name
        write_bytes_atomic(files[name], text.encode("utf-8"))
    return files


def summary_table(data: dict[str, Any]) -> Any:
    """A rich table for the terminal: timings, memory and the two trade-off metrics per method
    (errors and every other metric are in compare.md/html)."""
    from rich.table import Table

    from unlearn.report import fmt

    axes = [a for a in (data["axes"]["x"], data["axes"]["y"]) if a]
    table = Table("method", "status", "steps", "train s", "eval s", "peak MB train/eval", *[_axis_label(a) for a in axes])

    def value(metrics: dict[str, Any], key: str) -> str:
        role, name = key.split(".", 1)
        return fmt(metrics.get(role, {}).get(name), data["metrics"][role][name]["unit"])

    o = data["original"]
    table.add_row("original", "", "0", "–", _secs(o["eval_seconds"]), f"–/{_mb(o.get('peak_bytes'))}",
                  *[value(o["metrics"], a) for a in axes])
    for m, r in data["runs"].items():
        ok = r["status"] == "done"
        table.add_row(
            m, "[green]done[/green]" if ok else f"[red]failed ({r.get('failed_phase')})[/red]",
            "–" if r.get("steps") is None else str(r["steps"]), _secs(r.get("train_seconds")),
            _secs(r.get("eval_seconds")), f"{_mb(r.get('train_peak_bytes'))}/{_mb(r.get('eval_peak_bytes'))}",
            *[value(r["metrics"], a) for a in axes],
        )
    return table
