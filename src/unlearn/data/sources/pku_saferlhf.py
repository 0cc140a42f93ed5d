"""PKU-SafeRLHF: prompts with two responses, each labelled safe or unsafe (the harmful setting)."""

from __future__ import annotations

from typing import Any

from unlearn.config import SourceConfig
from unlearn.data.records import Example
from unlearn.data.sources import register_source
from unlearn.data.sources._common import flag, plain_fields, source_rows, text

SCHEMA = "prompt, response_0, response_1, is_response_0_safe, is_response_1_safe"
HUB = "PKU-Alignment/PKU-SafeRLHF"


@register_source("pku_saferlhf", schema=SCHEMA, hub=HUB)
def pku_saferlhf(source: SourceConfig, role: str) -> list[Example]:
    """Every unsafe response as a forget example (roles forget*); for other roles the safe ones."""
    plain_fields(source, "pku_saferlhf", role)
    want_safe = not role.startswith("forget")
    out: list[Example] = []
    seen: set[tuple[str, str]] = set()
    for where, rec in source_rows(source, role, "pku_saferlhf", HUB):
        prompt = text(rec, "prompt", where, SCHEMA)
        for j in (0, 1):
            response = text(rec, f"response_{j}", where, SCHEMA)
            safe = flag(rec, f"is_response_{j}_safe", where, SCHEMA)
            if safe != want_safe or not response.strip() or (prompt, response) in seen:
                continue
            seen.add((prompt, response))
            out.append(Example(prompt, response, _meta(rec, j, safe, where)))
    return out


def _meta(rec: dict[str, Any], j: int, safe: bool, where: str) -> dict[str, Any]:
    """Fields of the row that describe the prompt or response j; `response_j_x` becomes `x`."""
    other = 1 - j
    meta: dict[str, Any] = {"where": where, "response_index": j, "safe": safe}
    for key, value in rec.items():
        if key == "prompt" or key in (f"response_{j}", f"response_{other}"):
            continue
        if key.startswith((f"is_response_{j}", f"is_response_{other}", f"response_{other}_")):
            continue
        if key.startswith(f"response_{j}_"):
            meta[key[len(f"response_{j}_"):]] = value
        else:
            meta[key] = value
    return meta
