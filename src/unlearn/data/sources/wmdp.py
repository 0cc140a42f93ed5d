"""WMDP (Li et al. 2024, arXiv 2403.03218): the hazardous-knowledge questions and the unlearning
corpora, from local copies in the layouts they are published in (or the hub when online).

    questions  cais/wmdp, configs wmdp-bio, wmdp-cyber, wmdp-chem (one split, test): question,
               choices (4 strings), answer (index 0-3). The benchmark `wmdp` scores them; as a data
               set (split: wmdp-cyber) each is one example (question, the right choice).
    corpora    cais/wmdp-corpora, configs bio-retain-corpus, cyber-forget-corpus, cyber-retain-corpus
               (split train): field text. bio-forget-corpus (title, abstract, text) is not on the
               hub; the authors send it on request. The authors' zip (open-unlearning's
               `setup_data.py --wmdp`) holds the same corpora as wmdp-corpora/NAME.jsonl.

`split:` names the set. Under a folder `path` a set NAME is found as NAME.jsonl / NAME.parquet
(the zip), NAME/train-00000-of-00001.parquet (the hub), NAME/train/0000.parquet (the hub's parquet
branch) or a save_to_disk folder NAME/. A corpus document becomes passages the way dataset `text`
cuts a book (data.*.passage_words, data.*.prompt_words): prompt + response is the passage.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from unlearn.config import SourceConfig
from unlearn.data.records import SUFFIXES, Example, read_records
from unlearn.data.sources import register_source
from unlearn.data.sources._common import normalise, plain_fields, source_rows, split_name, text
from unlearn.data.sources.text import passages
from unlearn.errors import UnlearnError

QUESTION_SETS = ("wmdp-bio", "wmdp-cyber", "wmdp-chem")
CORPORA = ("bio-forget-corpus", "bio-retain-corpus", "cyber-forget-corpus", "cyber-retain-corpus")
KNOWN = QUESTION_SETS + CORPORA
HUB_QUESTIONS, HUB_CORPORA = "cais/wmdp", "cais/wmdp-corpora"
QUESTION_SCHEMA = "question, choices (a list of 4 strings), answer (the right choice's index, 0-3)"
MMLU_SCHEMA = "question, subject, choices (a list of 4 strings), answer (the right choice's index, 0-3)"
CORPUS_SCHEMA = "text (bio-forget-corpus also title, abstract)"
SCHEMA = f"split: wmdp-bio|wmdp-cyber|wmdp-chem: {QUESTION_SCHEMA}; split: a corpus ({', '.join(CORPORA)}): text"
_SAVED = ("dataset_dict.json", "dataset_info.json", "state.json")  # datasets' save_to_disk


@dataclass
class Question:
    """One multiple-choice question: choices[answer] is right. subject: MMLU's (empty for WMDP)."""

    question: str
    choices: list[str]
    answer: int
    where: str
    subject: str = ""


def question_row(rec: dict[str, Any], where: str, schema: str = QUESTION_SCHEMA, subject: bool = False) -> Question:
    """A question row in cais/wmdp's (or, subject=True, cais/mmlu's) schema; anything else is one
    error naming the row and the field."""
    rec = normalise(rec)
    q = text(rec, "question", where, schema)
    choices = rec.get("choices")
    if choices is None:
        raise UnlearnError(f"{where}: missing field 'choices' (expected fields: {schema})")
    if not isinstance(choices, (list, tuple)) or len(choices) != 4 or not all(isinstance(c, str) for c in choices):
        raise UnlearnError(f"{where}: field 'choices' must be a list of 4 strings, got {_shown(choices)}")
    answer = rec.get("answer")
    if answer is None:
        raise UnlearnError(f"{where}: missing field 'answer' (expected fields: {schema})")
    if isinstance(answer, bool) or not isinstance(answer, int) or not 0 <= answer < 4:
        raise UnlearnError(f"{where}: field 'answer' must be the right choice's index 0-3, got {_shown(answer)}")
    topic = text(rec, "subject", where, schema) if subject else ""
    return Question(q, list(choices), answer, where, topic or "")


def _shown(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 60 else s[:57] + "..."


# ---- finding a set under a folder -------------------------------------------------------------


def _data_files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def named_in(path: Path, names: tuple[str, ...] = KNOWN) -> str | None:
    """The set a file belongs to by its name: a folder named NAME on its path, or the file NAME.ext."""
    stem = path.name.split(".")[0]
    for part in [stem, *reversed(path.parent.parts)]:
        if part in names:
            return part
    return None


def locate(root: Path, name: str) -> list[Path]:
    """The files (or save_to_disk folder) of set `name` under folder `root`, in name order."""
    if (root / name).is_dir() and any((root / name / m).exists() for m in _SAVED):
        return [root / name]
    return [f for f in _data_files(root) if named_in(f.relative_to(root), (name,)) == name]


def present(root: Path, names: tuple[str, ...] = KNOWN) -> list[str]:
    """The sets of `names` found under folder `root`."""
    return [n for n in names if locate(root, n)]


def set_rows(root: Path, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(location, record) of every row of set `name` under `root` (a folder, or the set's own file)."""
    found = [root] if root.is_file() else locate(root, name)
    for f in found:
        for loc, rec in read_records(f):
            yield f"{f} {loc}", rec


# ---- MMLU (the benchmark's utility questions, cais/mmlu's layout) ----


def _mmlu_files(root: Path, split: str) -> list[Any]:
    """What holds MMLU's `split`: the folder's all/ files if it has them, else every subject's."""
    if any((root / m).exists() for m in ("dataset_dict.json", "dataset_info.json")):
        return [(root, split)]
    files = [f for f in sorted(root.rglob("*")) if f.is_file() and f.suffix.lower() in SUFFIXES
             and split_name(f.relative_to(root)) == split and not f.name.startswith(".")]
    in_all = [f for f in files if "all" in f.relative_to(root).parent.parts]
    return [(f, None) for f in (in_all or files)]


def read_mmlu(path: Path, split: str) -> list[Question]:
    """MMLU questions of `split` (test, dev) from a cais/mmlu copy (a file: that split)."""
    sources = [(path, None)] if path.is_file() else _mmlu_files(path, split)
    out = []
    for src, part in sources:
        for loc, rec in read_records(src, part):
            out.append(question_row(rec, f"{src} {loc}", MMLU_SCHEMA, subject=True))
    if not out:
        raise UnlearnError(f"{path}: no MMLU {split} split here (cais/mmlu's all/{split}-*.parquet, "
                           f"SUBJECT/{split}-*.parquet)")
    return out


# ---- the adapter ------------------------------------------------------------------------------


def _which(source: SourceConfig, role: str) -> str:
    """The set asked for: `split`, else what the file is named, else the only set in the folder."""
    split = source.split
    if split is not None and split not in KNOWN:
        raise UnlearnError(f"data.{role}.split: '{split}' is not a WMDP set; sets: {', '.join(KNOWN)}")
    if not source.path:
        if split is None:
            raise UnlearnError(f"data.{role}: dataset wmdp needs split: one of {', '.join(KNOWN)} (and path: "
                               "a local copy, or the hub is used)")
        return split
    path = Path(source.path).expanduser()
    if not path.exists():
        raise UnlearnError(f"{path}: not found (data.{role}.path for dataset wmdp)")
    if path.is_file():
        named = named_in(path)
        if split is not None and named is not None and named != split:
            raise UnlearnError(f"{path}: holds WMDP set '{named}' by its name, not '{split}' (data.{role}.split)")
        return split or named or "corpus"  # a file of another name: documents in the corpora's schema
    found = present(path)
    if split is not None:
        if split not in found:
            raise UnlearnError(f"{path}: no WMDP set '{split}' in this folder (data.{role}.split); found: "
                               f"{', '.join(found) or 'none'} (as NAME.jsonl, NAME.parquet or NAME/*.parquet)")
        return split
    if len(found) != 1:
        raise UnlearnError(f"{path}: holds {', '.join(found) or 'no WMDP set'}; set data.{role}.split: NAME "
                           f"({', '.join(KNOWN)})")
    return found[0]


def _rows(source: SourceConfig, role: str, name: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if source.path:
        yield from set_rows(Path(source.path).expanduser(), name)
        return
    if name == "bio-forget-corpus":
        raise UnlearnError(f"data.{role}: bio-forget-corpus is not on the hub (the WMDP authors send it on "
                           "request); pass its local copy with path:")
    hub = HUB_QUESTIONS if name in QUESTION_SETS else HUB_CORPORA
    yield from source_rows(dataclasses.replace(source, split=None), role, "wmdp", hub, config=name)


def _word_end(passage: str, k: int) -> int:
    """Character index just after the k-th word (the whole passage if it has fewer)."""
    ends = [m.end() for m in re.finditer(r"\S+", passage)]
    return ends[k - 1] if len(ends) >= k else len(passage)


@register_source("wmdp", schema=SCHEMA, hub=HUB_CORPORA)
def wmdp(source: SourceConfig, role: str) -> list[Example]:
    """WMDP corpus documents as passages (split: cyber-forget-corpus, ...); questions (split: wmdp-cyber) as QA.

    A question set gives (question, its right choice) per row, for QA evaluation sets; the
    benchmark `wmdp` scores the same rows as multiple choice."""
    plain_fields(source, "wmdp", role)
    name = _which(source, role)
    out: list[Example] = []
    if name in QUESTION_SETS:
        for where, rec in _rows(source, role, name):
            q = question_row(rec, where)
            meta = {"where": where, "set": name, "choices": q.choices, "answer": q.answer}
            out.append(Example(q.question.strip(), q.choices[q.answer], meta, where=where))
        return out
    for where, rec in _rows(source, role, name):
        doc = text(normalise(rec), "text", where, CORPUS_SCHEMA)
        for i, passage in enumerate(passages(doc or "", source.passage_words, source.prompt_words)):
            cut = _word_end(passage, source.prompt_words)
            out.append(Example(passage[:cut], passage[cut:], {"where": where, "passage": i}, where=where))
    if not out:
        raise UnlearnError(f"data.{role}: WMDP set '{name}' has no passage of more than "
                           f"data.{role}.prompt_words={source.prompt_words} words")
    return out
