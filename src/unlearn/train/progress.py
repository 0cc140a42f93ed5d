"""What a run shows and logs as it goes: the progress bar, the plan printed before the first step,
train_log.jsonl (one line every train.log_every steps)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from unlearn.config import Config
from unlearn.files import iter_log, write_text_atomic

# A log line standing for several steps takes LAST from its own (last) step, sums SUMS and
# averages every other number (loss, each term, forget_nll, grad_norm).
LAST = ("step", "lr", "eval")
SUMS = ("tokens", "seconds")


class TrainLog:
    """train_log.jsonl, one line every `every` steps (train.log_every).

    A line stands for the applied steps since the line before: `step` is its last step; `loss`,
    each term's value, `forget_nll` and `grad_norm` are means over those steps; `tokens` and
    `seconds` are sums; `lr` and `eval` are those of its own step; `steps`, present only when the
    line stands for more than one, says how many. With every = 1 (the default) a line is exactly
    one step's record. A line is also written at the last step and whenever `flush` is asked
    (the loop asks at a checkpoint, an evaluation, a stop and before a skipped step), so that a
    resumed run, which keeps the lines up to its checkpoint (truncate_log), loses no step. A
    skipped step always has its own line: {"step", "skipped": true, "nonfinite": [...]}. Every line
    is strict JSON: a value that is not finite is written as null (json_line).
    """

    def __init__(self, path: Path, every: int):
        self.file = open(path, "a")
        self.every = every
        self.pending: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any], flush: bool = False) -> dict[str, Any] | None:
        """Record one applied step; returns the line written, if this step wrote one."""
        self.pending.append(record)
        if flush or record["step"] % self.every == 0:
            return self.flush()
        return None

    def skipped(self, step: int, nonfinite: list[str]) -> None:
        self.flush()
        self._write({"step": step, "skipped": True, "nonfinite": nonfinite})

    def flush(self) -> dict[str, Any] | None:
        """Write the pending steps' line (none when nothing is pending)."""
        if not self.pending:
            return None
        line = merge_records(self.pending)
        self.pending = []
        self._write(line)
        return line

    def close(self) -> None:
        self.flush()
        self.file.close()

    def _write(self, line: dict[str, Any]) -> None:
        self.file.write(json_line(line) + "\n")
        self.file.flush()


def json_line(record: dict[str, Any]) -> str:
    """One log line as strict JSON: a non-finite number (which json.dumps would write as NaN or
    Infinity, which JSON readers refuse) is written as null, and a line whose loss or grad_norm is
    not finite is marked skipped (the loop never applies such a step)."""
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    line = clean(record)
    if any(isinstance(record.get(k), float) and line.get(k) is None for k in ("loss", "grad_norm")):
        line["skipped"] = True
    return json.dumps(line, allow_nan=False)


def merge_records(records: list[dict[str, Any]]) -> dict[str, Any]:
    """One log line for consecutive steps' records (see TrainLog); the record itself for one."""
    if len(records) == 1:
        return records[0]
    last, n = records[-1], len(records)
    line: dict[str, Any] = {}
    for key, value in last.items():
        values = [r.get(key) for r in records]
        if key in LAST or not all(isinstance(v, (int, float)) for v in values):
            line[key] = value
        elif key in SUMS:
            line[key] = round(sum(values), 4) if key == "seconds" else sum(values)
        else:
            line[key] = sum(values) / n
    line["steps"] = n
    return line


def truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of steps up to `step` (the checkpoint resumed from): the resumed run
    writes the later ones again. A line torn by a kill is dropped. Rewritten atomically."""
    if not path.exists():
        return
    keep = [json_line(rec) for rec in iter_log(path) if rec["step"] <= step]
    write_text_atomic(path, "".join(line + "\n" for line in keep))


class Progress:
    """A rich progress bar with each term's value on a terminal; a plain line now and then elsewhere."""

    def __init__(self, console: Any, total: int, start: int, title: str):
        self.console, self.total = console, total
        self.every = max(1, total // 20)
        self.shown = start  # the last step shown: a plain line when a multiple of `every` is passed
        self.bar = None
        if console.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn(f"[bold]{title}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                TextColumn("{task.fields[terms]}"), console=console, transient=False,
            )
            self.task = self.bar.add_task(title, total=total, completed=start, terms="")
            self.bar.start()

    def update(self, step: int, values: dict[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.3f}" for k, v in values.items())
        if self.bar is not None:
            self.bar.update(self.task, completed=step, terms=shown)
        elif step // self.every > self.shown // self.every or step == self.total:
            self.console.print(f"step {step}/{self.total}  {shown}")
        self.shown = step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_plan(console: Any, cfg: Config, manifest: dict[str, Any], segments: tuple[str, ...]) -> None:
    """What the run will do, before it starts: model, objective, data, steps, output, truncation."""
    ex = manifest["examples"]
    tr = manifest["truncated"]
    rows = [
        f"model      {cfg.model.name} ({cfg.model.dtype}"
        + (f", LoRA r={cfg.model.lora.r}" if cfg.model.lora else ", full fine-tune")
        + f"; {manifest['trainable_parameters']:,} of {manifest['parameters']:,} parameters trained)",
        "objective  " + ", ".join(f"{k} x {v if not isinstance(v, dict) else v['weight']}" for k, v in cfg.objective.items()),
        f"data       forget {ex['forget']}, retain {ex['retain']}, mismatch pool {ex['mismatch_pool']}"
        + (f" (k={cfg.data.mismatch.k})" if "mismatch" in segments else ""),
        f"steps      {cfg.train.max_steps} x batch {cfg.train.batch_size}"
        + (f" x accum {cfg.train.grad_accum}" if cfg.train.grad_accum > 1 else "")
        + f", lr {cfg.train.lr:g} ({cfg.train.scheduler})",
        f"output     {cfg.output_dir}",
    ]
    if tr["prompts"] or tr["responses"]:
        rows.append(
            f"[yellow]truncated  {tr['prompts']} of {tr['of']} examples lost prompt tokens "
            f"(data.max_length={cfg.data.max_length}); {tr['responses']} lost response tokens[/yellow]"
        )
    for r in rows:
        console.print(r)
