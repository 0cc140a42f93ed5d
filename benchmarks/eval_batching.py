"""How evaluation batches its generation, measured on a finished run's unlearned model: one
generate call per evaluation set or one per kind of set (all sets sorted by length together), at
16 and 64 prompts per batch, interleaved over rounds.

    python benchmarks/eval_batching.py --run runs/demo/run
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, default=Path("runs/demo/run"))
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from unlearn.config import load_config
    from unlearn.evaluate.generate import generate
    from unlearn.evaluate.forced import set_encoder
    from unlearn.evaluate.run import prepare, settings_of
    from unlearn.models import load_model

    cfg = load_config(args.run / "config.yaml", ["eval.cache=false"])
    tok, sets, *_ = prepare(cfg, "cpu")
    model, _ = load_model(dataclasses.replace(cfg.model, name=str(args.run / "model")), tok)
    qa = [s for s in sets.values() if s.kind == "qa"]
    enc = set_encoder(cfg, tok, qa[0])

    def per_set(bs: int) -> None:
        st = dataclasses.replace(settings_of(cfg), batch_size=bs)
        for s in qa:
            generate(model, enc, s.prompts, st)

    def per_kind(bs: int) -> None:
        generate(model, enc, [p for s in qa for p in s.prompts], dataclasses.replace(settings_of(cfg), batch_size=bs))

    for r in range(args.rounds):
        for name, fn in (("one call per set", per_set), ("one call per kind", per_kind)):
            for bs in (16, 64):
                t = time.perf_counter()
                fn(bs)
                print(f"round {r + 1}: {name}, batch {bs}: {time.perf_counter() - t:.1f} s", flush=True)


if __name__ == "__main__":
    main()
