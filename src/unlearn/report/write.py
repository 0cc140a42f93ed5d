"""Writing the reports to disk, each whole or absent.

    write_report(result)            -> OUTPUT_DIR/eval/{metrics.json, samples.jsonl, report.md, report.html}
    write_compare(folder, data)     -> OUTPUT_DIR/compare/{tradeoff.png, compare.html, compare.md, compare.json}
    write_audit(folder, audit)      -> OUTPUT_DIR/audit/{audit.json, report.md, report.html}

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
from unlearn.report import audit_report, compare_report, eval_report
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


def write_folder(folder: Path, files: dict[str, str]) -> Path:
    """Write text files into `folder` atomically: a temp folder beside it, renamed into place (an
    earlier folder there is replaced only once the new one is complete)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        for name, text in files.items():
            write_text_atomic(tmp / name, text)
        replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def write_report_files(
    folder: Path, metrics: dict[str, Any], samples: list[dict[str, Any]], train_log: Optional[Path] = None,
    audit: Optional[dict[str, Any]] = None,
) -> Path:
    """Write the four report files into `folder`, whole or absent (write_folder); with `audit`
    (audit.json's content) the reports end with the "Is it really gone?" section."""
    log = read_train_log(train_log)
    md = eval_report.render_markdown(metrics, samples)
    page = eval_report.render_html(metrics, samples, log)
    if audit is not None:
        md += "\n" + audit_report.render_markdown(audit)
        page = page.replace("</body></html>", audit_report.render_html_section(audit) + "\n</body></html>")
    return write_folder(folder, {
        "metrics.json": json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
        "samples.jsonl": _jsonl(samples), "report.md": md, "report.html": page,
    })


def write_report(result: Any, folder: Optional[Path] = None, audit: Optional[dict[str, Any]] = None) -> Path:
    """Write an EvalResult (unlearn.evaluate.run) to OUTPUT_DIR/eval (or `folder`), with the
    training curves of OUTPUT_DIR/train_log.jsonl (and the audit's section, when given)."""
    folder = Path(folder) if folder is not None else result.output_dir / "eval"
    return write_report_files(folder, result.metrics, result.samples, result.output_dir / "train_log.jsonl", audit)


def write_audit(folder: Path, audit: dict[str, Any]) -> Path:
    """OUTPUT_DIR/audit/{audit.json, report.md, report.html}, whole or absent."""
    return write_folder(folder, {
        "audit.json": json.dumps(audit, indent=2, ensure_ascii=False) + "\n",
        "report.md": "# Audit\n\n" + audit_report.render_markdown(audit),
        "report.html": audit_report.render_html(audit),
    })


def add_audit_to_report(folder: Path, audit: dict[str, Any]) -> bool:
    """Re-render the evaluation report in `folder` (OUTPUT_DIR/eval) with the audit's section, when
    that report exists and evaluated the same model; False when there is none to extend."""
    try:
        metrics = json.loads((folder / "metrics.json").read_text())
        samples = [json.loads(line) for line in (folder / "samples.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return False
    if metrics.get("run", {}).get("model_dir") != audit["run"]["model_dir"]:
        return False
    train_log = Path(audit["run"]["output_dir"]) / "train_log.jsonl"
    write_report_files(folder, metrics, samples, train_log if train_log.exists() else None, audit)
    return True


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
