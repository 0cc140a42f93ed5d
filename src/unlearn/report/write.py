"""Writing the reports to disk, each whole or absent.

    write_report(result)            -> OUTPUT_DIR/eval/{metrics.json, samples.jsonl, report.md, report.html}
    write_compare(folder, data)     -> OUTPUT_DIR/compare/{tradeoff.png, compare.html, compare.md, compare.json}

The eval report's four files are written into a temporary folder that is renamed into place
(unlearn.files.replace_dir), so a report is either complete or absent, and an earlier one is
replaced only once the new one is complete. compare's files are each written atomically, the
table files last.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Optional

from unlearn.files import iter_log, replace_dir, write_bytes_atomic, write_text_atomic
from unlearn.report import compare_report, eval_report
from unlearn.report.plots import tradeoff_png

FILES = ("metrics.json", "samples.jsonl", "report.md", "report.html")
COMPARE_FILES = ("compare.md", "compare.html", "compare.json", "tradeoff.png")


def read_train_log(path: Optional[Path]) -> list[dict[str, Any]]:
    """The records of a train_log.jsonl for the training curves; none when there is no log. A line
    cut off by a crash is skipped: the curves do without it."""
    if path is None:
        return []
    return list(iter_log(Path(path)))


def _jsonl(rows: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_report_files(
    folder: Path, metrics: dict[str, Any], samples: list[dict[str, Any]], train_log: Optional[Path] = None
) -> Path:
    """Write the four report files into `folder` atomically: a temp folder beside it, renamed into
    place (an earlier report there is replaced only once the new one is complete)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    log = read_train_log(train_log)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        write_text_atomic(tmp / "metrics.json", json.dumps(metrics, indent=2, ensure_ascii=False) + "\n")
        write_text_atomic(tmp / "samples.jsonl", _jsonl(samples))
        write_text_atomic(tmp / "report.md", eval_report.render_markdown(metrics, samples))
        write_text_atomic(tmp / "report.html", eval_report.render_html(metrics, samples, log))
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_report(result: Any, folder: Optional[Path] = None) -> Path:
    """Write an EvalResult (unlearn.evaluate.run) to OUTPUT_DIR/eval (or `folder`), with the
    training curves of OUTPUT_DIR/train_log.jsonl."""
    folder = Path(folder) if folder is not None else result.output_dir / "eval"
    return write_report_files(folder, result.metrics, result.samples, result.output_dir / "train_log.jsonl")


def write_compare(folder: Path, data: dict[str, Any]) -> dict[str, Path]:
    """tradeoff.png, compare.html, compare.md, then compare.json (compare.json's content is `data`):
    each file whole or absent. Returns the paths written, by name."""
    files: dict[str, Path] = {}
    png = tradeoff_png(data)
    if png is not None:
        files["tradeoff.png"] = folder / "tradeoff.png"
        write_bytes_atomic(files["tradeoff.png"], png)
    for name, text in (("compare.html", compare_report.render_html(data, png)),
                       ("compare.md", compare_report.render_markdown(data)),
                       ("compare.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")):
        files[name] = folder / name
        write_text_atomic(files[name], text)
    return files
