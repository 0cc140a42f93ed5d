"""HaluEval QA: questions with a right and a hallucinated answer (the hallucination setting)."""

from __future__ import annotations

from unlearn.config import SourceConfig
from unlearn.data.records import Example
from unlearn.data.sources import register_source
from unlearn.data.sources._common import source_rows, text

SCHEMA = "question, right_answer, hallucinated_answer, knowledge (optional)"
HUB = "pminervini/HaluEval"


@register_source("halueval", schema=SCHEMA, hub=HUB)
def halueval(source: SourceConfig, role: str) -> list[Example]:
    """(question, hallucinated answer) for roles forget*; (question, right answer) otherwise."""
    default_response = "hallucinated_answer" if role.startswith("forget") else "right_answer"
    prompt_field = "question" if source.prompt_field == "prompt" else source.prompt_field
    response_field = default_response if source.response_field == "response" else source.response_field
    out: list[Example] = []
    for where, rec in source_rows(source, role, "halueval", HUB, config="qa"):
        prompt = text(rec, prompt_field, where, SCHEMA)
        response = text(rec, response_field, where, SCHEMA)
        meta = {
            "where": where,
            # both answers travel with every example: the hallucination rate compares an output
            # with each of them
            "right_answer": text(rec, "right_answer", where, SCHEMA),
            "hallucinated_answer": text(rec, "hallucinated_answer", where, SCHEMA),
        }
        knowledge = text(rec, "knowledge", where, SCHEMA, required=False)
        if knowledge is not None:
            meta["knowledge"] = knowledge
        if response.strip():
            out.append(Example(prompt, response, meta))
    return out
