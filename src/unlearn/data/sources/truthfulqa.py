"""TruthfulQA (generation set): questions with a best answer, correct and incorrect answers."""

from __future__ import annotations

from unlearn.config import SourceConfig
from unlearn.data.records import Example
from unlearn.data.sources import register_source
from unlearn.data.sources._common import source_rows, string_list, text

SCHEMA = "question, best_answer, correct_answers, incorrect_answers (or the CSV's Question, Best Answer, ...)"
HUB = "truthfulqa/truthful_qa"


@register_source("truthfulqa", schema=SCHEMA, hub=HUB)
def truthfulqa(source: SourceConfig, role: str) -> list[Example]:
    """(question, best answer); as the mismatch pool, every distinct correct answer."""
    out: list[Example] = []
    seen: set[str] = set()
    for where, rec in source_rows(source, role, "truthfulqa", HUB, config="generation"):
        question = _field(rec, source.prompt_field, "question", where)
        best = text(rec, "best_answer", where, SCHEMA)
        correct = string_list(rec, "correct_answers", where, SCHEMA)
        meta = {
            "where": where,
            "best_answer": best,
            "correct_answers": correct,
            "incorrect_answers": string_list(rec, "incorrect_answers", where, SCHEMA),
            **{k: rec[k] for k in ("type", "category", "source") if k in rec},
        }
        if role == "mismatch" and source.response_field == "response":
            # Only correct answers: the pool becomes targets for forget prompts, and teaching
            # misconceptions would work against the hallucination setting.
            for answer in [best, *correct]:
                if answer.strip() and answer not in seen:
                    seen.add(answer)
                    out.append(Example(question, answer, meta))
            continue
        response = _field(rec, source.response_field, "best_answer", where)
        if response.strip():
            out.append(Example(question, response, meta))
    return out


def _field(rec: dict, configured: str, default: str, where: str) -> str:
    """The configured prompt/response field, or the adapter's own choice when left at its default."""
    name = default if configured in ("prompt", "response") else configured
    return text(rec, name, where, SCHEMA)
