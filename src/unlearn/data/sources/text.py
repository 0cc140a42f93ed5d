"""Plain text (books, corpora) as passages: the copyright setting."""

from __future__ import annotations

import re
from pathlib import Path

from unlearn.config import SourceConfig
from unlearn.data.records import Example, read_text_file
from unlearn.data.sources import register_source
from unlearn.data.sources._common import plain_fields
from unlearn.errors import UnlearnError

SCHEMA = "a .txt file, or a folder of .txt files (UTF-8); paragraphs separated by blank lines"


@register_source("text", schema=SCHEMA)
def text(source: SourceConfig, role: str) -> list[Example]:
    """Passages of a text: the first prompt_words words are the prompt, the rest the response.

    prompt + response is exactly the passage, so with `template: "{prompt}{response}"` the model sees
    the original text; the same passages serve as forget data (the book), extraction prompts for the
    leak rate, and normal text for the KL term. Lines inside a paragraph are joined with spaces;
    paragraphs inside a passage are separated by a newline.
    """
    plain_fields(source, "text", role)
    if not source.path:
        raise UnlearnError(f"data.{role}: dataset text needs path: a .txt file or a folder of .txt files")
    if source.split is not None:
        raise UnlearnError(f"data.{role}.split: does not apply to dataset text (remove it)")
    root = Path(source.path).expanduser()
    if not root.exists():
        raise UnlearnError(f"{root}: not found (data.{role}.path for dataset text)")
    files = sorted(p for p in root.rglob("*.txt") if p.is_file()) if root.is_dir() else [root]
    if not files:
        raise UnlearnError(f"{root}: no .txt files in this folder")
    out: list[Example] = []
    for f in files:
        for i, passage in enumerate(passages(read_text_file(f), source.passage_words, source.prompt_words)):
            cut = _end_of_word(passage, source.prompt_words)
            out.append(Example(passage[:cut], passage[cut:], {"file": str(f), "passage": i}))
    if not out:
        raise UnlearnError(
            f"{root}: no passage has more than data.{role}.prompt_words={source.prompt_words} words"
        )
    return out


def passages(text: str, passage_words: int, min_words: int) -> list[str]:
    """Split text into passages of about `passage_words` words.

    A passage ends at a paragraph break once it is at least half full, or mid-paragraph when full.
    A last passage of `min_words` words or fewer joins the one before it.
    """
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text)]
    out: list[list[str]] = []  # each passage as its paragraphs (or pieces of them)
    counts: list[int] = []
    current: list[str] = []
    n = 0
    for para in paragraphs:
        words = para.split(" ") if para else []
        while words:
            take, words = words[: passage_words - n], words[passage_words - n :]
            current.append(" ".join(take))
            n += len(take)
            if n >= passage_words or (not words and n >= passage_words // 2):
                out.append(current)
                counts.append(n)
                current, n = [], 0
    if current:
        if out and n <= min_words:
            out[-1].extend(current)
            counts[-1] += n
        else:
            out.append(current)
            counts.append(n)
    return ["\n".join(p) for p, c in zip(out, counts) if c > min_words]


def _end_of_word(passage: str, k: int) -> int:
    """Character index just after the k-th word."""
    for i, m in enumerate(re.finditer(r"\S+", passage), start=1):
        if i == k:
            return m.end()
    return len(passage)
