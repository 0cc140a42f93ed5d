"""Shipped configs for the paper's settings, runnable by name: `unlearn run harmful`.

Each YAML file here opens with a comment: what it does, then the exact command that runs it.
A name that is not an existing file is looked up here (`harmful`, `harmful.yaml` or
`recipes/harmful.yaml` all find this folder's harmful.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


@dataclass
class Recipe:
    name: str
    path: Path
    summary: str  # the opening comment's first sentence or line
    command: str  # the first `unlearn ...` command in the opening comment


def _opening_comment(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    return lines


def available_recipes() -> list[Recipe]:
    out = []
    for path in sorted(FOLDER.glob("*.yaml"), key=lambda p: p.stem):
        comment = _opening_comment(path)
        summary = comment[0] if comment else ""
        command = next((c for c in comment if c.startswith("unlearn ")), "")
        out.append(Recipe(path.stem, path, summary, command))
    return out


def find_recipe(name: str | Path) -> Path | None:
    """The packaged recipe `name` refers to (by stem, file name or recipes/NAME.yaml), or None."""
    p = Path(name)
    if p.suffix not in ("", ".yaml", ".yml"):
        return None
    if len(p.parts) > 1 and p.parent.name != "recipes":
        return None
    candidate = FOLDER / f"{p.stem}.yaml"
    return candidate if candidate.is_file() else None
