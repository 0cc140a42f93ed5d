"""`unlearn forget`'s hyper-parameters: picked from the model's size and LoRA or full fine-tuning.

The paper's objective (ga 0.5, mismatch 1, KL) on the model's own answers; the run stops as soon as
the held-out collected prompts are forgotten with utility kept (train.stop_when_forgotten), so
max_steps is an upper bound, not a schedule. TABLE holds the rows, each with where it comes from;
docs/forget.md shows them as `markdown_table()` renders them, and the measurement behind the one
measured row. Only the small LoRA row is measured here (a 2-core CPU, no GPU); the others follow the
paper and are not tuned. Any value can be overridden (`train.lr=...`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Row:
    max_params: float  # the row applies up to this many parameters
    lora: bool
    lr: float
    kl: float
    max_steps: int
    eval_every: int
    source: str


TABLE = (
    Row(0.5e9, True, 5e-4, 6.0, 60, 5, "measured on SmolLM2-135M"),
    Row(0.5e9, False, 2e-5, 3.0, 60, 5, "not measured: the paper's full fine-tuning lr x 10 for a 10x smaller model"),
    Row(3e9, True, 5e-4, 2.0, 200, 10, "not measured: between the rows above and below"),
    Row(3e9, False, 5e-6, 2.0, 300, 20, "not measured: between the rows above and below"),
    Row(float("inf"), True, 2e-4, 1.0, 400, 20, "the paper's LoRA range (up to 2e-4)"),
    Row(float("inf"), False, 2e-6, 1.0, 1000, 50, "the paper's OPT-1.3B setting (2e-6, about 1000 steps)"),
)
LORA = {"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"}
BATCH_SIZE = 4


def markdown_table() -> str:
    """TABLE as the Markdown table of docs/forget.md (a test keeps the page in step)."""
    lines = ["| parameters | tuning | lr | KL weight | max steps | eval every | source |",
             "|---|---|---|---|---|---|---|"]
    for r in TABLE:
        size = "larger" if r.max_params == float("inf") else f"<= {r.max_params / 1e9:g} B"
        lines.append(f"| {size} | {'LoRA' if r.lora else 'full'} | {r.lr:g} | {r.kl:g} | {r.max_steps} | "
                     f"{r.eval_every} | {r.source} |")
    return "\n".join(lines)


def pick(n_params: int, lora: bool) -> Row:
    """The table's row for a model of `n_params` parameters."""
    return next(r for r in TABLE if r.lora == lora and n_params <= r.max_params)


def config_values(row: Row) -> dict[str, Any]:
    """The row as config sections (objective, train, model.lora): what `unlearn forget` writes."""
    return {
        "objective": {"ga": 0.5, "mismatch": 1.0, "kl": row.kl},
        "train": {"lr": row.lr, "max_steps": row.max_steps, "eval_every": row.eval_every,
                  "batch_size": BATCH_SIZE, "scheduler": "constant", "warmup_steps": 0,
                  "keep_best": True, "stop_when_forgotten": True},
        "lora": dict(LORA) if row.lora else None,
    }
