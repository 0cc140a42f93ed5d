"""Read prompt/response examples from JSON Lines, JSON, CSV, Parquet or a local Hugging Face dataset.

Every mistake in a file becomes one UnlearnError naming the file, the line (or row) and the field.
Fields other than the prompt and response are kept as metadata.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from unlearn.errors import UnlearnError, text_problem


@dataclass
class Example:
    """One prompt and the response to unlearn (or keep)."""

    prompt: str
    response: str
    meta: dict[str, Any] = field(default_factory=dict)
    # Where it came from ("forget.jsonl line 12"), for messages about it later (templating, checks).
    where: str = field(default="", compare=False, repr=False)
    # The value of the source's group_field (None: none): splits keep a group in one part.
    group: Any = field(default=None, compare=False, repr=False)


def example_hash(prompt: str, response: str) -> str:
    """An example's identity across files and runs: the first 16 hex digits of
    sha256(prompt + NUL + response) in UTF-8. run.json's `trained_examples` lists forget examples
    by it; evaluation uses it to tell which examples a run trained on."""
    return hashlib.sha256((prompt + "\x00" + response).encode("utf-8")).hexdigest()[:16]


def _first_line(e: Exception) -> str:
    """The first line of an exception's message (or its type when the message is empty)."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


class _DuplicateKey(ValueError):
    pass


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _json_loads(text: str) -> Any:
    """json.loads, with the two ways it fails other than JSONDecodeError turned into one:
    very deep nesting ("[[[[...": RecursionError) and, refused here, a key given twice in one
    object (json keeps the last silently; which one the author meant is anyone's guess)."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise json.JSONDecodeError("nested too deeply", text, 0) from None
    except _DuplicateKey as e:
        raise json.JSONDecodeError(f"duplicate key {str(e)!r}", text, 0) from None


@contextlib.contextmanager
def _csv_field_limit() -> Any:
    """Lift the csv module's 128 KiB field limit (a long prompt is not an error), then restore it."""
    old = csv.field_size_limit()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        yield
    finally:
        csv.field_size_limit(old)


SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def read_text_file(path: Path) -> str:
    """A UTF-8 file's text (a BOM is dropped); unreadable or invalid bytes are one-line errors
    naming the file, line and column."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UnlearnError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        raise UnlearnError(
            f"{path} line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at column {col})"
        ) from None


def _records_jsonl(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    text = read_text_file(path)
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = _json_loads(line)
        except json.JSONDecodeError as e:
            raise UnlearnError(f"{path} line {n}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(rec, dict):
            raise UnlearnError(
                f"{path} line {n}: expected a JSON object with 'prompt' and 'response', "
                f"got {type(rec).__name__}"
            )
        yield f"line {n}", rec


def _records_json(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    text = read_text_file(path)
    try:
        data = _json_loads(text)
    except json.JSONDecodeError as e:
        if e.msg == "Extra data" and text.lstrip().startswith("{"):
            # JSON Lines under a .json name (HaluEval's qa_data.json is one): read it as such.
            yield from _records_jsonl(path)
            return
        raise UnlearnError(f"{path} line {e.lineno}: invalid JSON ({e.msg})") from None
    if isinstance(data, dict):
        # {"data": [...]} or {"train": [...]}-style files: take the single list inside.
        lists = [v for v in data.values() if isinstance(v, list) and all(isinstance(x, dict) for x in v)]
        if not lists:  # one object: a JSON Lines file of one line
            yield from _records_jsonl(path)
            return
        if len(lists) != 1:
            raise UnlearnError(f"{path}: expected a JSON list of objects (or JSON Lines)")
        data = lists[0]
    if not isinstance(data, list):
        raise UnlearnError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise UnlearnError(f"{path} item {i}: expected a JSON object, got {type(rec).__name__}")
        yield f"item {i}", rec


def _records_csv(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    text = read_text_file(path)
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise UnlearnError(f"{path} line {line}: NUL byte in a CSV file")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    with _csv_field_limit():
        yield from _csv_rows(path, reader)


def _csv_rows(path: Path, reader: csv.DictReader) -> Iterable[tuple[str, dict[str, Any]]]:
    try:
        if not reader.fieldnames:
            return
        header = reader.fieldnames
        dupes = {h for h in header if header.count(h) > 1}
        if dupes:
            raise UnlearnError(f"{path} line 1: duplicate column(s) {', '.join(sorted(dupes))}")
        start = 2
        for rec in reader:
            if None in rec:
                raise UnlearnError(f"{path} line {start}: more values than columns in the header")
            if all(v is None or v == "" for v in rec.values()):
                start = reader.line_num + 1
                continue
            missing = [k for k, v in rec.items() if v is None]
            if missing:
                raise UnlearnError(
                    f"{path} line {start}: fewer values than columns (no '{missing[0]}')"
                )
            yield f"line {start}", rec
            start = reader.line_num + 1
    except csv.Error as e:
        raise UnlearnError(f"{path} line {reader.line_num}: CSV error ({e})") from None


def _records_parquet(path: Path) -> Iterable[tuple[str, dict[str, Any]]]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for corrupt files
        raise UnlearnError(f"{path}: not a readable Parquet file ({_first_line(e)})") from None
    for i, rec in enumerate(table.to_pylist()):
        yield f"row {i}", rec


def _records_hf(path: Path, split: str | None) -> Iterable[tuple[str, dict[str, Any]]]:
    import datasets

    try:
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists() or (
            path / "state.json"
        ).exists():
            ds = datasets.load_from_disk(str(path))
        else:
            ds = datasets.load_dataset(str(path))
    except Exception as e:
        raise UnlearnError(f"{path}: cannot load as a dataset folder ({_first_line(e)})") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds.keys())
        if split is None:
            split = "train" if "train" in ds else (names[0] if len(names) == 1 else None)
        if split not in ds:
            raise UnlearnError(
                f"{path}: split '{split}' not found; splits: {', '.join(names)} (set split: NAME)"
            )
        ds = ds[split]
    for i, rec in enumerate(ds):
        yield f"row {i}", dict(rec)


def read_records(path: str | Path, split: str | None = None) -> Iterable[tuple[str, dict[str, Any]]]:
    """Yield (location, record) pairs from a file or dataset folder."""
    p = Path(path)
    if not p.exists():
        raise UnlearnError(f"{p}: data file not found")
    if p.is_dir():
        return _records_hf(p, split)
    kind = SUFFIXES.get(p.suffix.lower())
    if kind is None:
        raise UnlearnError(
            f"{p}: unknown file type '{p.suffix}'; use one of {', '.join(sorted(SUFFIXES))}"
        )
    return {
        "jsonl": _records_jsonl,
        "json": _records_json,
        "csv": _records_csv,
        "parquet": _records_parquet,
    }[kind](p)


def record_string(rec: dict[str, Any], name: str, where: str, *, required: bool = True, hint: str = "") -> str | None:
    """A string field of a record: missing (when required), not a string, or unusable text
    (errors.text_problem) is a one-line error naming `where` and the field; `hint` follows
    "missing field 'x'" (e.g. "(expected fields: prompt, category)"). None when absent and optional."""
    if name not in rec or rec[name] is None:
        if required:
            raise UnlearnError(f"{where}: missing field '{name}'" + (f" {hint}" if hint else ""))
        return None
    v = rec[name]
    if not isinstance(v, str):
        raise UnlearnError(f"{where}: field '{name}' must be a string, got {type(v).__name__}")
    problem = text_problem(v)
    if problem:
        raise UnlearnError(f"{where}: field '{name}' {problem}")
    return v


def to_example(
    rec: dict[str, Any], where: str, prompt_field: str = "prompt", response_field: str = "response"
) -> Example:
    """Validate one record and turn it into an Example."""
    values = {}
    for name in (prompt_field, response_field):
        if name not in rec:
            raise UnlearnError(f"{where}: missing field '{name}'")
        v = rec[name]
        if not isinstance(v, str):
            kind = "null" if v is None else type(v).__name__
            raise UnlearnError(f"{where}: field '{name}' must be a string, got {kind}")
        problem = text_problem(v)
        if problem:
            raise UnlearnError(f"{where}: field '{name}' {problem}")
        values[name] = v
    if not values[response_field].strip():
        raise UnlearnError(f"{where}: field '{response_field}' is empty")
    meta = {k: v for k, v in rec.items() if k not in (prompt_field, response_field)}
    return Example(prompt=values[prompt_field], response=values[response_field], meta=meta, where=where)


def load_examples(
    path: str | Path,
    *,
    split: str | None = None,
    prompt_field: str = "prompt",
    response_field: str = "response",
    limit: int | None = None,
) -> list[Example]:
    """Load and validate examples from a file or dataset folder."""
    out: list[Example] = []
    for loc, rec in read_records(path, split):
        out.append(to_example(rec, f"{path} {loc}", prompt_field, response_field))
        if limit is not None and len(out) >= limit:
            break
    return out
