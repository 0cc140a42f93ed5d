"""Where one unlearning step's time goes: torch's profiler over one step of `unlearn` as shipped
(benchmarks/harness.py:UnlearnStep), after three warm-up steps, the ops sorted by their own CPU time.

    python benchmarks/profile_step.py            # LoRA
    python benchmarks/profile_step.py --full     # full fine-tune
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

import common  # noqa: E402
from harness import Setting, UnlearnStep, load  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full fine-tune instead of LoRA")
    ap.add_argument("--rows", type=int, default=25, help="ops shown")
    args = ap.parse_args()
    s = Setting(impl="unlearn", lora=not args.full)
    from unlearn.memory import keep_freed_memory

    keep_freed_memory()  # as the command line does at start (unlearn.cli.main)
    torch.manual_seed(s.seed)
    model, tok = load(s)
    runner = UnlearnStep(s, model, tok, common.paper_shaped_data(tok, s.seq_len, shape=s.shape, seed=s.seed))
    for i in range(3):
        runner.step(i)
    times = []
    for i in range(3, 6):
        t = time.perf_counter()
        runner.step(i)
        times.append(time.perf_counter() - t)
    print(f"{s.label}: s/step {', '.join(f'{t:.2f}' for t in times)}")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        runner.step(10)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
