"""Shared by the dataset adapters: where rows come from (a local file or folder, or the hub), which
split is used, and field access with errors that name the file, the row and the field.

Upstream data sets rename things (the authors' script broke when PKU-SafeRLHF's split changed), so:
- column names are matched case-insensitively with spaces as underscores ("Best Answer" is
  `best_answer`);
- a folder's splits are read from its file names (`train.jsonl`, `data/test-00000-of-00001.parquet`,
  `validation.csv`); the split named by `split:` is used, else `train`, else the only one; anything
  else is one error line listing the splits that exist.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from unlearn.config import SourceConfig
from unlearn.data.records import SUFFIXES, read_records
from unlearn.errors import UnlearnError

Rows = Iterator[tuple[str, dict[str, Any]]]

KNOWN_SPLITS = ("train", "test", "validation", "valid", "val", "dev", "eval")


def normalise(rec: dict[str, Any]) -> dict[str, Any]:
    """Field names lower-cased, spaces and dashes as underscores: 'Best Answer' -> 'best_answer'."""
    return {re.sub(r"[\s\-]+", "_", str(k).strip()).lower(): v for k, v in rec.items()}


def split_name(path: Path) -> str:
    """The split a data file holds, from its name, else its folders' names, else its stem."""
    for part in [path.stem, *reversed(path.parent.parts)]:
        for token in re.split(r"[^a-z0-9]+", part.lower()):
            if token in KNOWN_SPLITS:
                return token
    return path.stem.lower()


def pick_split(names: list[str], split: str | None, where: str) -> str:
    """The split to use: the one asked for, else train, else the only one."""
    if split is not None:
        if split in names:
            return split
        raise UnlearnError(f"{where}: split '{split}' not found; splits: {', '.join(names)} (set split: NAME)")
    if "train" in names:
        return "train"
    if len(names) == 1:
        return names[0]
    raise UnlearnError(f"{where}: no 'train' split; splits: {', '.join(names)} (set split: NAME)")


def _dataset_rows(ds: Any, split: str | None, where: str) -> Rows:
    """Rows of a `datasets` Dataset or DatasetDict (one split of it)."""
    import datasets

    if isinstance(ds, (datasets.DatasetDict, dict)):
        name = pick_split(list(ds.keys()), split, where)
        ds, where = ds[name], f"{where} split {name}"
    elif split is not None and getattr(ds, "split", None) is not None and str(ds.split) != split:
        raise UnlearnError(f"{where}: holds the single split '{ds.split}', not '{split}'")
    for i, rec in enumerate(ds):
        yield f"{where} row {i}", dict(rec)


def _folder_rows(folder: Path, split: str | None) -> Rows:
    markers = ("dataset_info.json", "dataset_dict.json", "state.json")
    if any((folder / m).exists() for m in markers):  # written by datasets' save_to_disk
        import datasets

        try:
            ds = datasets.load_from_disk(str(folder))
        except Exception as e:  # datasets raises several types for damaged folders
            raise UnlearnError(f"{folder}: cannot load the saved dataset ({str(e).splitlines()[0]})") from None
        yield from _dataset_rows(ds, split, str(folder))
        return
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    if not files:
        raise UnlearnError(f"{folder}: no data files ({', '.join(sorted(SUFFIXES))}) in this folder")
    by_split: dict[str, list[Path]] = {}
    for f in files:
        by_split.setdefault(split_name(f.relative_to(folder)), []).append(f)
    name = pick_split(sorted(by_split), split, str(folder))
    for f in by_split[name]:
        for loc, rec in read_records(f):
            yield f"{f} {loc}", rec


def _file_rows(path: Path, split: str | None) -> Rows:
    if split is not None and split_name(path) != split:
        raise UnlearnError(
            f"{path}: a single file holds one split ('{split_name(path)}' by its name), not '{split}'; "
            "point path at the file of that split or at the folder holding all of them"
        )
    for loc, rec in read_records(path):
        yield f"{path} {loc}", rec


def _hub_rows(hub: str, config: str | None, split: str | None, adapter: str, role: str) -> Rows:
    import datasets

    try:
        ds = datasets.load_dataset(hub, config) if config else datasets.load_dataset(hub)
    except Exception as e:  # offline, renamed, gated: datasets raises many types
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnlearnError(
            f"data.{role}: dataset {adapter}: cannot load '{hub}' from the Hugging Face hub ({reason}); "
            f"pass a local copy with data.{role}.path: a file or folder in the same schema (e.g. saved "
            f"where there is network with datasets.load_dataset('{hub}'"
            + (f", '{config}'" if config else "")
            + ").save_to_disk(DIR))"
        ) from None
    yield from _dataset_rows(ds, split, hub)


def source_rows(source: SourceConfig, role: str, adapter: str, hub: str | None, config: str | None = None) -> Rows:
    """(location, normalised record) pairs from `source.path` (file or folder), else from the hub."""
    if source.path:
        path = Path(source.path).expanduser()
        if not path.exists():
            raise UnlearnError(f"{path}: not found (data.{role}.path for dataset {adapter})")
        rows = _folder_rows(path, source.split) if path.is_dir() else _file_rows(path, source.split)
    elif hub is not None:
        rows = _hub_rows(hub, config, source.split, adapter, role)
    else:
        raise UnlearnError(f"data.{role}: dataset {adapter} needs path: a local file or folder")
    for where, rec in rows:
        yield where, normalise(rec)


def text(rec: dict[str, Any], name: str, where: str, schema: str, required: bool = True) -> str | None:
    """A string field; a missing or non-string field is an error naming the row and the field."""
    key = normalise({name: None}).popitem()[0]
    if key not in rec or rec[key] is None:
        if not required:
            return None
        raise UnlearnError(f"{where}: missing field '{name}' (expected fields: {schema})")
    v = rec[key]
    if not isinstance(v, str):
        raise UnlearnError(f"{where}: field '{name}' must be a string, got {type(v).__name__}")
    if "\x00" in v:
        raise UnlearnError(f"{where}: field '{name}' contains a NUL character")
    return v


def string_list(rec: dict[str, Any], name: str, where: str, schema: str) -> list[str]:
    """A list of strings; a string is split at ';' (the TruthfulQA CSV's way of listing answers)."""
    key = normalise({name: None}).popitem()[0]
    if key not in rec or rec[key] is None:
        raise UnlearnError(f"{where}: missing field '{name}' (expected fields: {schema})")
    v = rec[key]
    if isinstance(v, str):
        v = v.split(";")
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise UnlearnError(f"{where}: field '{name}' must be a list of strings or a ';'-separated string")
    return [x.strip() for x in v if x.strip()]


def flag(rec: dict[str, Any], name: str, where: str, schema: str) -> bool:
    """A boolean field: true/false, 1/0, or their spellings as strings (CSV)."""
    if name not in rec or rec[name] is None:
        raise UnlearnError(f"{where}: missing field '{name}' (expected fields: {schema})")
    v = rec[name]
    if isinstance(v, bool):
        return v
    if isinstance(v, int) and v in (0, 1):
        return bool(v)
    if isinstance(v, str) and v.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
        return v.strip().lower() in ("true", "1", "yes")
    raise UnlearnError(f"{where}: field '{name}' must be true or false, got {v!r}")


def plain_fields(source: SourceConfig, adapter: str, role: str) -> None:
    """Adapters that pick their own fields refuse prompt_field/response_field instead of ignoring them."""
    for key, default in (("prompt_field", "prompt"), ("response_field", "response")):
        if getattr(source, key) != default:
            raise UnlearnError(
                f"data.{role}.{key}: dataset {adapter} picks its own fields; remove {key} "
                "(see `unlearn datasets`)"
            )
