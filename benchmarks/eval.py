"""End-to-end evaluation and audit time of a finished run (the demo's by default), against its
unlearning time, measured side by side in one run. Each command runs as its own process, as a
user runs it; the rounds alternate the commands so that machine noise hits each alike.

    python benchmarks/eval.py --run runs/demo/run          # after `unlearn demo` (or make demo)
    python benchmarks/eval.py --run runs/demo/run --rounds 2 --skip audit

Commands timed (wall clock of the whole process: start-up, model loads, generation, scoring):

    unlearn      `unlearn run` of the run's config into a temporary folder: the unlearning time
    one-by-one   `unlearn eval` generating one prompt at a time (eval.batch_size=1): the pattern of
                 a plain HF `generate` loop, as open-unlearning, MUSE and WMDP run it
    eval cold    `unlearn eval` with an empty output cache: both models generate
    eval warm    `unlearn eval` with the original model's outputs already cached (what every
                 evaluation after the first of the same original is: compare, eval_every, re-runs)
    audit cold   `unlearn audit` with an empty output cache (every attack, both models)
    audit warm   `unlearn audit` with the original model's outputs already cached (what every audit
                 after the first of the same original is: each method of `compare --audit` after
                 the first, a re-run's audit); primed by an audit of the original model itself

Targets (issue: evaluation as fast as training): eval at most 0.5x the unlearning time; the demo's
audit at most 3 minutes on 2 CPU cores. Results: benchmarks/results/eval.{json,md}.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

COMMANDS = ("unlearn", "one-by-one", "eval cold", "eval warm", "audit cold", "audit warm")


def command(name: str, config: Path, run: Path, scratch: Path) -> tuple[list[str], dict[str, str]]:
    """(argv, extra environment) of one timed command; `run` is a copy of the finished run (its
    reports are rewritten there, not in the original), `scratch` holds the output cache."""
    cli = [sys.executable, "-m", "unlearn"]
    cache = {"UNLEARN_OUTPUT_CACHE": str(scratch / "outputs")}
    if name == "unlearn":
        return cli + ["run", str(config), f"output_dir={scratch / 'run'}", "--overwrite"], {}
    at = f"output_dir={run}"
    if name == "one-by-one":
        return cli + ["eval", str(config), at, "eval.batch_size=1", "eval.cache=false"], {}
    if name in ("eval cold", "eval warm"):
        return cli + ["eval", str(config), at], cache
    if name in ("audit cold", "audit warm"):
        return cli + ["audit", str(config), at], cache
    if name == "audit original":  # primes the cache: the original audited as if it were the unlearned model
        import yaml

        original = yaml.safe_load(config.read_text())["model"]["name"]
        return cli + ["audit", str(config), at, "--model", str(original)], cache
    raise ValueError(name)


def timed(argv: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    proc = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/demo/run"), help="a finished run (holds config.yaml)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--skip", default="", help="comma-separated commands to leave out")
    ap.add_argument("--name", default="eval")
    args = ap.parse_args()
    config = args.run / "config.yaml"
    if not config.exists():
        raise SystemExit(f"{config}: not found; run `unlearn demo` first, or pass --run OUTPUT_DIR")
    names = [n for n in COMMANDS if n not in {s.strip() for s in args.skip.split(",") if s.strip()}]
    secs: dict[str, list[float]] = {n: [] for n in names}
    t0 = time.time()
    copy = Path(tempfile.mkdtemp(prefix="unlearn-bench-run-")) / "run"
    shutil.copytree(args.run, copy, ignore=shutil.ignore_patterns("checkpoints", "eval", "audit", "compare"))
    for r in range(args.rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for n in order:
            scratch = Path(tempfile.mkdtemp(prefix="unlearn-bench-eval-"))
            try:
                if n == "eval warm":  # the original's outputs cached first; only the timed run counts
                    timed(*command("eval cold", config, copy, scratch))
                if n == "audit warm":  # the original's audit outputs cached first, not the unlearned model's
                    timed(*command("audit original", config, copy, scratch))
                common.progress(f"round {r + 1}: {n}")
                secs[n].append(timed(*command(n, config, copy, scratch)))
                common.progress(f"round {r + 1}: {n}: {secs[n][-1]:.1f} s")
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
    shutil.rmtree(copy.parent, ignore_errors=True)
    med = {n: common.median(v) for n, v in secs.items() if v}
    base = med.get("unlearn")
    data: dict[str, Any] = {
        "run": str(args.run), "rounds": args.rounds, "seconds": secs, "median_s": med,
        "ratio_to_unlearning": {n: v / base for n, v in med.items()} if base else {},
        "machine": common.machine_info(), "wall_s": round(time.time() - t0, 1),
    }
    rows = []
    for n in names:
        if n not in med:
            continue
        ratio = f"{med[n] / base:.2f}x" if base else ""
        note = {"eval cold": "target: <= 0.5x", "eval warm": "target: <= 0.5x", "audit cold": "target: <= 180 s",
                "audit warm": "target: <= 180 s"}.get(n, "")
        speed = f"{med['one-by-one'] / med[n]:.2f}x faster" if "one-by-one" in med and n.startswith("eval") else ""
        rows.append([n, f"{med[n]:.1f}", ratio, speed, note])
    md = "\n".join([
        f"**{args.name}**: `{args.run}`, {args.rounds} round(s), commands alternated, wall clock of each process.",
        "",
        common.table(["command", "seconds", "of unlearning time", "vs one prompt at a time", ""], rows),
        "",
        f"Machine: {common.machine_line(data['machine'])}.",
    ])
    common.write_results(args.name, data, md)
    print(md)


if __name__ == "__main__":
    main()
