"""Rows that end during decoding, on the audit's real workload: the jailbreak attack's prompts of a
finished run (every rewrite of every audited question), generated and scored by the audit's own
`AuditContext.measure` on the run's unlearned model, in one process, alternated rounds, the output
cache off.

    shipped   rows leave the reserved KV cache at the step they end; the kept rows beyond the new
              batch move into their places (unlearn.evaluate.kvcache.drop_rows)
    copy      the earlier policy: once an eighth of the batch has ended, every kept row is copied
              into new buffers (Cache.batch_select_indices)

    python benchmarks/decode_drops.py --run runs/demo/run --rounds 10

The outputs of both must be identical; the benchmark stops if they are not. Besides the time, each
policy's decoded row-steps (positions computed by the decoding steps, rows that ended but are still
in the batch included) are counted (benchmarks/work.py's counter). Results:
benchmarks/results/decode_drops.{json,md}.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import work  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a finished run's folder (its config.yaml and model/)")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--name", default="decode_drops")
    args = ap.parse_args()

    from unlearn.memory import keep_freed_memory

    keep_freed_memory()  # as the command line runs
    import unlearn.evaluate.kvcache as kvcache
    from unlearn.auditing.attacks.prompts import jailbreak
    from unlearn.auditing.run import build_context
    from unlearn.config import load_config
    from unlearn.models import load_model

    run = Path(args.run)
    cfg = load_config(run / "config.yaml", [f"output_dir={run}", "eval.cache=false"])
    ctx, *_, model_dir, _ = build_context(cfg, None, False)
    model, _ = load_model(dataclasses.replace(cfg.model, name=str(model_dir)), ctx.tokenizer)
    model.eval()
    probes = jailbreak(ctx, model, "unlearned")
    rows = sum(len(p.prompts_of(r)) for p in probes for r in p.sets)
    shipped = kvcache.drop_rows

    computed: dict[str, int] = {}

    def once(policy: str) -> tuple[float, list]:
        kvcache.drop_rows = shipped if policy == "shipped" else (lambda cache, keep: None)
        try:
            with work.instrument() as (counts, _):
                t = time.perf_counter()
                trials = ctx.measure(model, "unlearned", probes)
                s = time.perf_counter() - t
            computed[policy] = counts["decode", "positions"]
            return s, [t.outputs for t in trials]
        finally:
            kvcache.drop_rows = shipped

    once("shipped")  # warm-up: allocator, kernels
    secs: dict[str, list[float]] = {"shipped": [], "copy": []}
    outputs = {}
    for r in range(args.rounds):
        for policy in (("shipped", "copy") if r % 2 == 0 else ("copy", "shipped")):
            s, outputs[policy] = once(policy)
            secs[policy].append(s)
            common.progress(f"round {r + 1}: {policy} {s:.2f} s")
        if outputs["shipped"] != outputs["copy"]:
            raise SystemExit("the two policies gave different outputs")
    med = {k: common.median(v) for k, v in secs.items()}
    ratio = med["shipped"] / med["copy"]
    md = common.table(
        ["policy", "seconds, median (min-max)", "vs copy", "decoded row-steps"],
        [[k, f"{med[k]:.2f} ({min(v):.2f}-{max(v):.2f})", f"{med[k] / med['copy']:.3f}x", f"{computed[k]:,}"]
         for k, v in secs.items()],
    )
    md = (f"The jailbreak attack's {rows} rows on {model_dir}, generated and scored, {args.rounds} alternated "
          f"rounds in one process; outputs identical.\n\n{md}\n\n{common.machine_line(common.machine_info())}\n")
    common.write_results(args.name, {"rows": rows, "rounds": args.rounds, "seconds": secs, "median": med, "decoded_row_steps": computed,
                                     "ratio": ratio}, md)
    print(md)


if __name__ == "__main__":
    main()
