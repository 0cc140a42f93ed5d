"""`unlearn demo`: the whole promise on a laptop, offline, with no data of your own.

    1. data     fictitious people's private facts (data/sources/profiles.py), deterministic
    2. teach    `unlearn finetune` teaches the bundled SmolLM2-135M-Instruct every person's facts
                with LoRA (the `demo_teach` recipe); cached, keyed by the config and the data
    3. unlearn  `unlearn run` with the paper's objective forgets a quarter of the people (`demo`)
    4. eval     `unlearn eval`: the taught model against the unlearned one, report.html

Each step is the public command it names, run through the Python API with the packaged recipes,
so what the demo shows is what a user gets. `--quick` is the same scenario on a smaller budget
(shorter teaching, fewer unlearning steps, fewer evaluation prompts) for smoke tests.

The summary puts each of the demo's targets beside the measured value; the targets are reported,
never enforced (a run that misses one still writes its report).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from unlearn.errors import UnlearnError

DEMO_MARK = "demo.json"


@dataclass(frozen=True)
class DemoPlan:
    """Budget of one demo mode: overrides on top of the packaged recipes."""

    name: str
    teach: tuple[str, ...]  # overrides of the `demo_teach` recipe
    unlearn: tuple[str, ...]  # overrides of the `demo` recipe's training
    eval: tuple[str, ...]  # overrides of its eval section


PLANS = {
    "full": DemoPlan("full", (), (), ()),
    # Its own, shorter teaching (a separate cache entry): about 80 % of the forget facts learnt
    # instead of all of them, enough to show the drop, in half the time.
    "quick": DemoPlan(
        "quick",
        ("train.max_steps=24",),
        ("train.max_steps=10",),
        ("eval.limit=9", "eval.max_new_tokens=16"),
    ),
}


@dataclass
class DemoResult:
    output_dir: Path
    taught_model: Path
    teach_cached: bool
    report: Path
    metrics: dict[str, Any]
    summary: list[dict[str, Any]]
    seconds: dict[str, float]


def _recipe(name: str) -> Path:
    from unlearn.recipes import find_recipe

    path = find_recipe(name)
    if path is None:  # a broken install, not a user mistake
        raise UnlearnError(f"the packaged recipe '{name}' is missing; reinstall unlearn")
    return path


def teach_key(cfg: Any) -> str:
    """What the taught model depends on: the resolved teaching config (without its output_dir), the
    examples it trains on and this package's version. 16 hex digits of a SHA-256."""
    from unlearn.version import __version__
    from unlearn.data import load_source

    conf = cfg.to_dict()
    conf.pop("output_dir", None)
    h = hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode())
    for role in ("forget", "retain"):
        source = getattr(cfg.data, role)
        for e in load_source(source, role) if source is not None else []:
            h.update(json.dumps([e.prompt, e.response], ensure_ascii=False).encode())
    h.update(__version__.encode())
    return h.hexdigest()[:16]


def _finished(run_dir: Path) -> bool:
    try:
        manifest = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return manifest.get("status") == "done" and (run_dir / "model" / "config.json").exists()


def check_demo_dir(out: Path, overwrite: bool) -> None:
    """An existing output folder is replaced only with --overwrite, and only if a demo made it."""
    if not out.exists():
        return
    if out.is_file():
        raise UnlearnError(f"{out}: exists and is a file; choose another --out")
    if not any(out.iterdir()):
        return
    if not overwrite:
        raise UnlearnError(f"{out}: already exists; pass --overwrite to replace it, or choose another --out")
    if not (out / DEMO_MARK).exists():
        raise UnlearnError(
            f"{out}: exists and was not written by `unlearn demo` (no {DEMO_MARK}); refusing to delete it"
        )


def teach(console: Any, overrides: tuple[str, ...] = (), cache: Optional[Path] = None) -> tuple[Path, bool, float]:
    """The taught model (its folder), whether it came from the cache, and the seconds it took.

    Cached in CACHE/demo/teach-KEY (see teach_key); a file lock makes concurrent demos wait for
    one teacher instead of training twice."""
    from filelock import FileLock

    from unlearn.api import finetune
    from unlearn.config import load_config
    from unlearn.models import cache_dir

    t0 = time.time()
    cfg = load_config(_recipe("demo_teach"), list(overrides))
    root = (cache or cache_dir()) / "demo"
    root.mkdir(parents=True, exist_ok=True)
    run_dir = root / f"teach-{teach_key(cfg)}"
    with FileLock(str(root / f"{run_dir.name}.lock")):
        if _finished(run_dir):
            console.print(f"taught model from the cache: {run_dir / 'model'}")
            return run_dir / "model", True, time.time() - t0
        cfg = load_config(_recipe("demo_teach"), [*overrides, f"output_dir={run_dir}"])
        finetune(cfg, overwrite=True, console=console)
    return run_dir / "model", False, time.time() - t0


def run_demo(
    out_dir: str | Path = "runs/demo",
    *,
    quick: bool = False,
    overwrite: bool = False,
    cache: Optional[Path] = None,
    console: Any = None,
) -> DemoResult:
    """Teach, unlearn, evaluate; write OUT_DIR (data/, unlearn run, eval/report.html, demo.json)."""
    from rich.console import Console

    from unlearn.api import run, run_eval
    from unlearn.config import load_config
    from unlearn.data.sources.profiles import write_profiles
    from unlearn.files import write_text_atomic

    console = console or Console(stderr=True)
    plan = PLANS["quick" if quick else "full"]
    out = Path(out_dir).expanduser().resolve()
    check_demo_dir(out, overwrite)
    t_start = time.time()
    seconds: dict[str, float] = {}

    # Everything that can be checked before hours are spent: the recipes load, the data is there.
    unlearn_overrides = [*plan.unlearn, *plan.eval, f"output_dir={out / 'run'}"]
    load_config(_recipe("demo"), ["model.name=smollm2-135m", *unlearn_overrides])

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_text_atomic(out / DEMO_MARK, json.dumps({"status": "running", "mode": plan.name}, indent=2) + "\n")
    written = write_profiles(out / "data")

    console.rule("[bold]1/3 teach[/bold]: SmolLM2-135M learns every fictitious person's facts")
    taught, cached, seconds["teach"] = teach(console, plan.teach, cache)

    console.rule("[bold]2/3 unlearn[/bold]: forget a quarter of the people (the paper's objective)")
    t0 = time.time()
    cfg = load_config(_recipe("demo"), [f"model.name={taught}", *unlearn_overrides])
    run(cfg, overwrite=True, console=console)
    seconds["unlearn"] = time.time() - t0

    console.rule("[bold]3/3 evaluate[/bold]: the taught model against the unlearned one")
    t0 = time.time()
    result = run_eval(cfg, console=console)
    seconds["eval"] = time.time() - t0
    seconds["total"] = time.time() - t_start

    summary = demo_summary(result.metrics)
    report = out / "run" / "eval" / "report.html"
    write_text_atomic(
        out / DEMO_MARK,
        json.dumps(
            {
                "status": "done", "mode": plan.name, "taught_model": str(taught), "teach_cached": cached,
                "report": str(report), "data": {k: str(v) for k, v in written.items()},
                "seconds": {k: round(v, 1) for k, v in seconds.items()}, "summary": summary,
            },
            indent=2,
        )
        + "\n",
    )
    return DemoResult(out, taught, cached, report, result.metrics, summary, seconds)


def _value(metrics: dict[str, Any], role: str, name: str, which: str) -> Optional[float]:
    m = metrics.get("metrics", {}).get(role, {}).get(name)
    return None if m is None else m.get(which)


def demo_summary(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The demo's targets (issue: taught leak >= 90 %, unlearned leak <= 5 %, paraphrases <= 10 %,
    retain accuracy >= 90 % of the taught model's, general-question cosine >= 0.8, diversity >= 0.8x
    the taught model's, no degenerate general answers) beside the measured values."""
    v = lambda role, name, which="unlearned": _value(metrics, role, name, which)  # noqa: E731
    rows = []

    def add(what: str, taught: Optional[float], unlearned: Optional[float], target: str, met: Optional[bool], unit: str):
        rows.append({"what": what, "taught": taught, "unlearned": unlearned, "target": target, "met": met, "unit": unit})

    t_leak = v("forget", "leak_rate", "original")
    add("taught model knows the forget facts (leak rate)", t_leak, None, ">= 90 %",
        None if t_leak is None else t_leak >= 0.9, "%")
    u_leak = v("forget", "leak_rate")
    add("forget facts leaked after unlearning", t_leak, u_leak, "<= 5 %", None if u_leak is None else u_leak <= 0.05, "%")
    p_t, p_u = v("forget_test", "leak_rate", "original"), v("forget_test", "leak_rate")
    add("unseen paraphrases of them leaked", p_t, p_u, "<= 10 %", None if p_u is None else p_u <= 0.10, "%")
    r_t, r_u = v("retain", "retain_accuracy", "original"), v("retain", "retain_accuracy")
    add("other people's facts kept (retain accuracy)", r_t, r_u, ">= 90 % of taught",
        None if r_t is None or r_u is None else r_u >= 0.9 * r_t, "%")
    cos = v("normal", "similarity_cosine")
    add("general answers like the taught model's (cosine)", None, cos, ">= 0.8", None if cos is None else cos >= 0.8, "")
    d_t, d_u = v("normal", "diversity", "original"), v("normal", "diversity")
    add("diversity of general answers", d_t, d_u, ">= 0.8x taught",
        None if d_t is None or d_u is None else d_u >= 0.8 * d_t, "%")
    g_u = v("normal", "degenerate_rate")
    add("empty or degenerate general answers", v("normal", "degenerate_rate", "original"), g_u, "none",
        None if g_u is None else g_u == 0, "%")
    return rows
