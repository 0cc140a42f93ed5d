"""`make bench`: every benchmark on this machine, then the tables, the issue's targets checked
against the numbers, and docs/performance.md updated with them.

    python benchmarks/run_all.py            # everything (39 minutes on 2 quiet CPU cores)
    python benchmarks/run_all.py --quick    # fewer rounds and points: a smoke run of the machinery
    python benchmarks/run_all.py --only step,generate

Results: benchmarks/results/*.json (every number, the command, the machine), *.md (tables),
scaling.png, summary.md (all tables and the targets). The tables between the
`<!-- bench:NAME -->` markers of docs/performance.md are replaced by the new ones (--no-docs: not).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

HERE = Path(__file__).resolve().parent
DOCS = common.ROOT / "docs" / "performance.md"


def plan(quick: bool) -> list[tuple[str, list[str]]]:
    """(results name, command) of each benchmark, in the order they run."""
    py = [sys.executable]
    if quick:
        return [
            ("step", py + [str(HERE / "step.py"), "--warmup", "1", "--rounds", "2"]),
            ("step_fixed", py + [str(HERE / "step.py"), "--variants", "fixed", "--name", "step_fixed", "--warmup", "1",
                                 "--rounds", "2"]),
            ("step_ablation", py + [str(HERE / "step.py"), "--variants", "ablation", "--name", "step_ablation",
                                    "--warmup", "1", "--rounds", "2", "--no-flops"]),
            ("step_chunk", py + [str(HERE / "step.py"), "--variants", "chunk", "--batch", "2", "--seq-len", "128",
                                 "--k", "1", "--shape", "full", "--name", "step_chunk", "--warmup", "1",
                                 "--rounds", "1", "--no-flops"]),
            ("scaling", py + [str(HERE / "scaling.py"), "--seq-lens", "64,128,256", "--batches", "1,2,4",
                              "--steps", "1"]),
            ("generate", py + [str(HERE / "generate.py"), "--prompts", "8", "--batch-size", "8",
                               "--max-new-tokens", "12", "--rounds", "1"]),
        ]
    return [
        ("step", py + [str(HERE / "step.py"), "--warmup", "2", "--rounds", "5"]),
        ("step_fixed", py + [str(HERE / "step.py"), "--variants", "fixed", "--name", "step_fixed", "--warmup", "2",
                             "--rounds", "5"]),
        # the main comparison again, each step timed right after another (as training runs)
        ("step_warm", py + [str(HERE / "step.py"), "--steps-per-turn", "2", "--name", "step_warm", "--warmup", "2",
                            "--rounds", "5", "--no-tensor-peak"]),
        ("step_ablation", py + [str(HERE / "step.py"), "--variants", "ablation", "--name", "step_ablation",
                                "--warmup", "1", "--rounds", "4", "--no-flops"]),
        *[(f"step_allocator_{kind}", py + [str(HERE / "step.py"), "--variants", f"allocator-{kind}", "--name",
                                           f"step_allocator_{kind}", "--warmup", "2", "--rounds", "5", "--no-flops",
                                           "--no-tensor-peak"]) for kind in ("full", "lora")],
        ("step_kernels", py + [str(HERE / "step.py"), "--variants", "kernels", "--name", "step_kernels", "--warmup",
                               "2", "--rounds", "5", "--no-flops", "--no-tensor-peak"]),
        ("step_chunk", py + [str(HERE / "step.py"), "--variants", "chunk", "--batch", "4", "--seq-len", "256",
                             "--k", "1", "--shape", "full", "--name", "step_chunk", "--warmup", "1",
                             "--rounds", "2", "--no-flops"]),
        ("scaling", py + [str(HERE / "scaling.py")]),
        ("generate", py + [str(HERE / "generate.py")]),
    ]


def load(name: str) -> dict[str, Any] | None:
    path = common.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def targets() -> list[list[str]]:
    """The issue's targets, each with the measured value and met / NOT met."""
    rows: list[list[str]] = []

    def add(what: str, value: float | None, ok: bool | None, how: str) -> None:
        shown = "not measured" if value is None else f"{value:.2f}"
        rows.append([what, shown, "?" if ok is None else ("met" if ok else "NOT met"), how])

    step = load("step")
    v = (step or {}).get("variants", {})
    fixed = (load("step_fixed") or {}).get("variants", {})  # the authors padded to 128, in a run of its own

    def speed(n: str, ref: str) -> float | None:
        """ref's time over n's, from the one run that timed both side by side."""
        for run in (fixed, v):  # step_fixed first: since the split, step.json holds no padding to 128
            a, b = run.get(n, {}).get("median_s"), run.get(ref, {}).get("median_s")
            if a and b:
                return b / a
        return None

    def mem(n: str, ref: str, key: str = "peak_bytes") -> float | None:
        a, b = v.get(n, {}).get(key), v.get(ref, {}).get(key)
        return a / b if a and b else None

    for kind, label in (("full", "full fine-tune"), ("lora", "LoRA")):  # their best case first
        for name, how in (("step", "one step a turn"), ("step_warm", "two steps a turn, the second timed")):
            run = (load(name) or {}).get("variants", {})
            a, b = run.get(f"unlearn-{kind}", {}).get("median_s"), run.get(f"authors-{kind}-longest", {}).get("median_s")
            s = b / a if a and b else None
            add(f"{label} step >= 2x faster than the authors' best case ({how})", s, None if s is None else s >= 2,
                f"{name}.json: authors-{kind}-longest / unlearn-{kind}")
    s = speed("unlearn-full", "authors-full")
    add("full fine-tune step >= 3x faster than the authors' pattern", s, None if s is None else s >= 3,
        "step_fixed.json: authors-full / unlearn-full median s/step")
    s = speed("unlearn-lora", "authors-lora")
    add("LoRA step >= 4x faster than the authors' pattern with the same LoRA", s, None if s is None else s >= 4,
        "step_fixed.json: authors-lora / unlearn-lora")
    s = speed("unlearn-lora", "authors-full")
    add("LoRA step >= 4x faster than the authors' full fine-tune", s, None if s is None else s >= 4,
        "step_fixed.json: authors-full / unlearn-lora")
    m = mem("unlearn-lora", "unlearn-full")
    add("peak memory with LoRA <= 0.6x the full fine-tune's (frozen copy)", m, None if m is None else m <= 0.6,
        "step.json: unlearn-lora / unlearn-full peak")
    m = mem("unlearn-lora", "unlearn-full", "tensor_peak_bytes")
    if m is not None:  # CPU only: what the step's tensors need, without the allocator's and libraries' share
        add("... the same, counting live tensors only", m, m <= 0.6,
            "step.json: unlearn-lora / unlearn-full tensor_peak_bytes (profiler memory timeline)")
    gen = load("generate")
    if gen:
        modes = list(gen["modes"].values())
        g = modes[1]["speedup_tokens_per_s"] if len(modes) > 1 else None
    else:
        g = None
    add("batched generation >= 4x the throughput of one at a time", g, None if g is None else g >= 4,
        "generate.json: useful tokens/s, batched / one at a time")
    sc = load("scaling")
    for key, what in (("time_batch", "as the batch grows"), ("time_all", "over all points")):
        fit = (sc or {}).get("fits", {}).get(key)
        sl = fit["loglog_slope"] if fit else None
        add(f"step time at most linear in tokens/step ({what}; slope <= 1.1: linear within noise)", sl,
            None if sl is None else sl <= 1.1, "scaling.json: log-log slope of s/step against tokens/step (1 = linear)")
    return rows


def update_docs(blocks: dict[str, str]) -> bool:
    """Replace the text between <!-- bench:NAME --> and <!-- /bench:NAME --> in docs/performance.md."""
    if not DOCS.exists():
        return False
    text = DOCS.read_text()
    for name, md in blocks.items():
        pat = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        text = pat.sub(lambda m: m.group(1) + md.rstrip() + "\n" + m.group(2), text)
    tmp = DOCS.with_name(f".{DOCS.name}.tmp")
    tmp.write_text(text)
    tmp.replace(DOCS)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="comma-separated results names to run "
                    "(step, step_fixed, step_warm, step_ablation, step_allocator_full, step_allocator_lora, step_kernels, "
                    "step_chunk, "
                    "scaling, generate)")
    ap.add_argument("--no-docs", action="store_true", help="do not update docs/performance.md")
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else None
    t0 = time.time()
    walls: dict[str, float] = {}
    failed = []
    for name, cmd in plan(args.quick):
        if only and name not in only:
            continue
        common.progress(f"\n=== {name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}")
        t = time.time()
        rc = subprocess.call(cmd, cwd=common.ROOT)
        walls[name] = time.time() - t
        if rc != 0:
            failed.append(name)
            common.progress(f"=== {name} FAILED (exit {rc})")
    blocks: dict[str, str] = {"machine": common.machine_line(common.machine_info()) + "."}
    for name, _ in plan(False):
        path = common.RESULTS / f"{name}.md"
        if path.exists():
            blocks[name] = path.read_text()
    tgt = targets()
    blocks["targets"] = common.table(["target (smollm2-135m, batch 2, 128 tokens, k = 5, this machine)",
                                      "measured", "", "from"], tgt)
    summary = "\n\n".join(f"### {n}\n\n{md.rstrip()}" for n, md in blocks.items())
    (common.RESULTS / "summary.md").write_text(summary + "\n")
    print("\n" + summary)
    total = time.time() - t0
    print(f"\nmake bench: {total / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in walls.items())})")
    if not args.no_docs and not args.quick and not only:
        if update_docs(blocks):
            print(f"Updated the tables in {DOCS.relative_to(common.ROOT)}")
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
