"""MUSE (Shi et al. 2024, arXiv 2407.06460): news articles (MUSE-News) and Harry Potter books
(MUSE-Books) to unlearn, in the hub's layout (muse-bench/MUSE-News, muse-bench/MUSE-Books).

Each hub data set has configs, each with splits, one field set per config:

    raw       forget, retain1, retain2, holdout         text            (the corpora trained on)
    verbmem   forget                                    prompt, gt      (VerbMem: continue the prompt)
    knowmem   forget_qa, retain_qa (+ _icl few shots)   question, answer (KnowMem)
    privleak  forget, retain, holdout                   text            (PrivLeak's MIA)

A local copy is a folder holding one folder per config, as the hub repository does
(`raw/forget-00000-of-00001.parquet`), each split a file named by it (`forget.jsonl`,
`forget-00000-of-00001.parquet`, .json, .csv), a folder written by `save_to_disk` of the config's
DatasetDict (`raw/`) or of one split (`raw/forget/`). `path` may also point at a config's folder or
at one split's file. With no path the hub is read (online only).

Training (`data.forget: {dataset: muse, path: DIR, split: forget}`): the split's texts are joined
with a blank line between them (as open-unlearning's PretrainingDataset joins them before cutting
2048-token chunks) and cut into passages as the `text` adapter cuts a book; the first prompt_words
words are the prompt. `split: knowmem/retain_qa` (CONFIG/SPLIT) gives (question, answer) pairs,
`split: verbmem/forget` (prompt, gt).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

from unlearn.config import SourceConfig
from unlearn.data.records import SUFFIXES, Example, read_records
from unlearn.data.sources import register_source
from unlearn.data.sources._common import normalise, plain_fields, source_rows, text
from unlearn.data.sources.text import passages
from unlearn.errors import UnlearnError

HUBS = {"news": "muse-bench/MUSE-News", "books": "muse-bench/MUSE-Books"}
# The fields each config's rows carry (open-unlearning's configs/data/datasets/MUSE_*.yaml).
FIELDS = {"raw": ("text",), "verbmem": ("prompt", "gt"), "knowmem": ("question", "answer"),
          "privleak": ("text",), "scal": ("text",), "sust": ("text",)}
SCHEMA = ("hub layout: raw/{forget,retain1,retain2,holdout} (text), verbmem/forget (prompt, gt), "
          "knowmem/{forget,retain}_qa[_icl] (question, answer), privleak/{forget,holdout} (text)")


def _is_saved(folder: Path) -> bool:
    return any((folder / m).exists() for m in ("dataset_info.json", "dataset_dict.json", "state.json"))


def _split_files(folder: Path, split: str) -> list[Path]:
    """`split.EXT` or the hub's shards `split-00000-of-00002.EXT` in folder (or its data/)."""
    out = []
    for d in (folder, folder / "data"):
        if d.is_dir():
            for f in sorted(d.iterdir()):
                name, suffix = f.name[: -len(f.suffix)] if f.suffix else f.name, f.suffix.lower()
                if f.is_file() and suffix in SUFFIXES and (
                    name == split or (name.startswith(split + "-") and "-of-" in name[len(split):])
                ):
                    out.append(f)
    return out


def _splits_in(folder: Path) -> list[str]:
    """The split names a folder's files and sub-folders hold (for the error listing them)."""
    names = set()
    for d in (folder, folder / "data"):
        if d.is_dir():
            for f in d.iterdir():
                if f.is_file() and f.suffix.lower() in SUFFIXES:
                    names.add(f.name[: -len(f.suffix)].split("-0")[0])
                elif f.is_dir() and _is_saved(f):
                    names.add(f.name)
    return sorted(names)


def local_rows(root: Path, config: str, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, normalised record) of split `split` of config `config` in a local copy at root."""
    root = root.expanduser()
    if not root.exists():
        raise UnlearnError(f"{root}: not found (a local copy of MUSE: {SCHEMA})")
    if root.is_file():
        found = [root]
    else:
        folder = root / config if (root / config).is_dir() else root
        if _is_saved(folder) and (folder / "dataset_dict.json").exists():
            found = [folder]
        elif (folder / split).is_dir():
            found = [folder / split]
        else:
            found = _split_files(folder, split)
        if not found:
            have = ", ".join(_splits_in(folder)) or "none"
            raise UnlearnError(
                f"{folder}: no split '{split}' of MUSE config '{config}' (looked for {split}.jsonl/.json/"
                f".csv/.parquet, the hub's {split}-00000-of-00001.parquet or a saved dataset); splits "
                f"there: {have}"
            )
    for f in found:
        for loc, rec in read_records(f, split if f.is_dir() else None):
            yield f"{f} {loc}", normalise(rec)


def muse_rows(path: str | None, corpus: str, config: str, split: str,
              role: str = "benchmark") -> Iterator[tuple[str, dict[str, Any]]]:
    """Rows of one config's split: from the local copy at `path`, else from the hub (corpus
    news or books). Every row is checked for the config's fields (one line naming file, row, field)."""
    if path:
        rows = local_rows(Path(path), config, split)
    elif role == "benchmark":
        try:
            rows = iter(list(source_rows(SourceConfig(split=split), role, "muse", HUBS[corpus], config=config)))
        except UnlearnError:
            raise UnlearnError(
                f"eval.benchmarks.muse: no path, and {HUBS[corpus]} ({config}/{split}) cannot be loaded from the "
                f"hub; set path to a local copy (huggingface-cli download {HUBS[corpus]} --repo-type dataset "
                "--local-dir DIR)"
            ) from None
    else:
        rows = source_rows(SourceConfig(split=split), role, "muse", HUBS[corpus], config=config)
    schema = ", ".join(FIELDS.get(config, ()))
    for where, rec in rows:
        for name in FIELDS.get(config, ()):
            text(rec, name, where, f"{schema} (MUSE {config}/{split})")
        yield where, rec


def _config_split(source: SourceConfig, role: str) -> tuple[str, str]:
    default = "forget" if role.startswith("forget") else "retain1"
    raw = source.split or default
    config, _, split = raw.rpartition("/")
    config = config or "raw"
    if config not in FIELDS:
        raise UnlearnError(f"data.{role}.split: unknown MUSE config '{config}' in '{raw}'; configs: "
                           f"{', '.join(FIELDS)} (split: CONFIG/SPLIT, or a split of raw)")
    return config, split


def _examples(source: SourceConfig, role: str, corpus: str) -> list[Example]:
    plain_fields(source, "muse", role)
    config, split = _config_split(source, role)
    rows = list(muse_rows(source.path, corpus, config, split, role))
    if config == "knowmem":
        return [Example(r["question"], r["answer"], {"where": w}, where=w) for w, r in rows]
    if config == "verbmem":
        return [Example(r["prompt"], r["gt"], {"where": w}, where=w) for w, r in rows]
    if not rows:
        raise UnlearnError(f"{source.path or HUBS[corpus]}: MUSE {config}/{split} has no rows")
    # One text, as upstream joins the split's documents before cutting it into chunks.
    joined = "\n\n".join(r["text"] for _, r in rows)
    first = rows[0][0].rsplit(" row ", 1)[0].rsplit(" line ", 1)[0]
    out = []
    for i, passage in enumerate(passages(joined, source.passage_words, source.prompt_words)):
        cut = _end_of_word(passage, source.prompt_words)
        where = f"{first} passage {i}"
        out.append(Example(passage[:cut], passage[cut:], {"where": where, "passage": i}, where=where))
    if not out:
        raise UnlearnError(f"{first}: no passage has more than data.{role}.prompt_words={source.prompt_words} words")
    return out


def _end_of_word(passage: str, k: int) -> int:
    """Character index just after the k-th word (where the text adapter cuts a passage)."""
    for i, m in enumerate(re.finditer(r"\S+", passage), start=1):
        if i == k:
            return m.end()
    return len(passage)


@register_source("muse", schema=SCHEMA, hub=HUBS["news"])
def muse(source: SourceConfig, role: str) -> list[Example]:
    """MUSE-News (or a local copy of MUSE-Books): split forget/retain1/retain2/holdout of raw as passages
    (prompt: the first prompt_words words), or CONFIG/SPLIT (knowmem/retain_qa: question -> answer)."""
    return _examples(source, role, "news")


@register_source("muse_books", schema=SCHEMA, hub=HUBS["books"])
def muse_books(source: SourceConfig, role: str) -> list[Example]:
    """MUSE-Books: as `muse`, from muse-bench/MUSE-Books when no path is given."""
    return _examples(source, role, "books")
