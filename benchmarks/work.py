"""What a cold `unlearn eval` and a cold `unlearn audit` of a finished run compute, and how fast:
each command's own function run once in this process (the output cache off), every forward of the
model counted by the positions it computes, timed by phase.

    python benchmarks/work.py --run runs/demo/run              # both
    python benchmarks/work.py --run runs/demo/run --skip audit

Phases: prefill (the prompts' forward, and a shared prefix's, before decoding), decode (one new
position per row and step, rows that ended and are still in the batch included), nll (teacher-
forced forwards: the targets' NLL, fluency, membership inference, and the fast-path checks), and
for the audit the relearning fine-tunes (their forwards; the phase's seconds include backward,
optimizer, the copy of the model and the merge).

FLOPs: 2 x the decoder's linear weights per position computed, plus 2 x the output head's per
position the head ran at; a fine-tune's backward through frozen weights computes input gradients,
another forward's worth. Attention scores are left out (a few per cent at these lengths). The
fp32 matmul peak is measured before and after, in this process. Results:
benchmarks/results/work.{json,md}.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import sys
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

PHASES = ("prefill", "decode", "nll", "finetune")


@contextlib.contextmanager
def instrument() -> Iterator[tuple[collections.Counter, collections.defaultdict]]:
    """Count positions and head rows per phase, and time each, by wrapping unlearn's forwards
    (restored on exit)."""
    import torch

    import unlearn.auditing.attacks.relearn as relearn
    import unlearn.evaluate.decode as decode
    import unlearn.models.forward as forward

    counts: collections.Counter = collections.Counter()
    secs: collections.defaultdict = collections.defaultdict(float)
    call, logits_at, finetune = decode._Forward.__call__, forward.logits_at, relearn.finetune_lora

    def counted_call(self: Any, model: Any, ids: Any, mask: Any, position: Any, cache: Any) -> Any:
        t = time.perf_counter()
        out = call(self, model, ids, mask, position, cache)
        phase = "decode" if ids.shape[1] == 1 else "prefill"
        counts[phase, "positions"] += ids.numel()
        counts[phase, "head"] += ids.shape[0]
        secs[phase] += time.perf_counter() - t
        return out

    def counted_logits(model: Any, inputs: dict, select: Any, where: Any, fast: bool) -> Any:
        t = time.perf_counter()
        out = logits_at(model, inputs, select, where, fast)
        phase = "finetune" if torch.is_grad_enabled() else "nll"
        counts[phase, "positions"] += inputs["input_ids"].numel()
        counts[phase, "head"] += out.shape[0] if fast else inputs["input_ids"].numel()
        if phase == "nll":
            secs[phase] += time.perf_counter() - t
        return out

    def timed_finetune(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return finetune(*args, **kwargs)
        finally:
            secs["finetune"] += time.perf_counter() - t

    decode._Forward.__call__, forward.logits_at, relearn.finetune_lora = counted_call, counted_logits, timed_finetune
    try:
        yield counts, secs
    finally:
        decode._Forward.__call__, forward.logits_at, relearn.finetune_lora = call, logits_at, finetune


def weights(cfg: Any) -> tuple[int, int]:
    """(the decoder's linear weights, the output head's), counted on the original model."""
    import torch

    from unlearn.models import load_model

    model, _ = load_model(cfg.model)
    head = model.get_output_embeddings().weight
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight is not head)
    return linear, head.numel()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run's folder (its config.yaml and model/)")
    ap.add_argument("--skip", default="", help="comma-separated: eval, audit")
    ap.add_argument("--name", default="work")
    args = ap.parse_args(argv)

    from unlearn.memory import keep_freed_memory

    keep_freed_memory()  # as the command line runs
    from unlearn.auditing.run import run_audit
    from unlearn.config import load_config
    from unlearn.evaluate.run import evaluate_run

    run = Path(args.run)
    cfg = load_config(run / "config.yaml", [f"output_dir={run}", "eval.cache=false"])
    peaks = [common.matmul_peak() / 1e9]
    skip = set(filter(None, args.skip.split(",")))
    results: dict[str, Any] = {}
    for name, fn in (("eval", lambda: evaluate_run(cfg)), ("audit", lambda: run_audit(cfg))):
        if name in skip:
            continue
        common.progress(f"{name}: running")
        with instrument() as (counts, secs):
            t = time.perf_counter()
            fn()
            results[name] = {"seconds": time.perf_counter() - t, "phase_seconds": dict(secs),
                             "counts": {f"{p} {k}": v for (p, k), v in counts.items()}}
    peaks.append(common.matmul_peak() / 1e9)
    linear, head = weights(cfg)
    rows = []
    for name, r in results.items():
        total = 0.0
        for phase in PHASES:
            n, h = r["counts"].get(f"{phase} positions", 0), r["counts"].get(f"{phase} head", 0)
            if not n:
                continue
            tflop = 2 * (n * linear + h * head) * (2 if phase == "finetune" else 1) / 1e12
            total += tflop
            s = r["phase_seconds"].get(phase, 0.0)
            r.setdefault("tflop", {})[phase] = tflop
            rows.append([name, phase, f"{n:,}", f"{h:,}", f"{tflop:.2f}", f"{s:.1f}", f"{tflop * 1e3 / s:.0f}" if s else ""])
        r["tflop_total"] = total
        rows.append([name, "**whole command**", "", "", f"**{total:.2f}**", f"{r['seconds']:.1f}",
                     f"{total * 1e3 / r['seconds']:.0f}"])
    md = common.table(["command", "phase", "positions", "head rows", "TFLOP", "seconds", "GFLOP/s"], rows)
    md = (f"{run}, in one process, the output cache off; fp32 matmul peak {peaks[0]:.0f} GFLOP/s before and "
          f"{peaks[1]:.0f} after. Decoder linear weights {linear:,}, output head {head:,}.\n\n{md}\n\n"
          f"{common.machine_line(common.machine_info())}\n")
    common.write_results(args.name, {"run": str(run), "peaks_gflops": peaks, "linear_weights": linear,
                                     "head_weights": head, "results": results}, md)
    print(md)


if __name__ == "__main__":
    main()
