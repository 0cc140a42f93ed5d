"""Reading YAML config files safely, with the origin ('file line N') of every key.

The safe loader only (no tags that build objects), duplicate keys refused, nesting depth bounded
before PyYAML's recursive composer sees it, aliases walked once. Every problem is one UnlearnError
line naming the file and the line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from unlearn.errors import UnlearnError


def _record_lines(
    node: yaml.Node, prefix: str, source: str, origins: dict[str, str], seen_nodes: set[int] | None = None
) -> None:
    # An alias shares its anchor's node: walk each node once, or nested aliases (the "billion laughs"
    # file of a few hundred bytes) take exponential time. Keys under an alias report the alias's line.
    seen_nodes = set() if seen_nodes is None else seen_nodes
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            full = f"{prefix}.{key}" if prefix else key
            line = key_node.start_mark.line + 1
            if key in seen:
                raise UnlearnError(f"{source} line {line}: {full}: duplicate key")
            seen.add(key)
            origins[full] = f"{source} line {line}"
            _record_lines(value_node, full, source, origins, seen_nodes)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            full = f"{prefix}.{i}"
            origins[full] = f"{source} line {item.start_mark.line + 1}"
            _record_lines(item, full, source, origins, seen_nodes)


MAX_YAML_DEPTH = 64


class YamlTooDeep(Exception):
    """Raised by parse_yaml for nesting deeper than MAX_YAML_DEPTH (`line`: where it got too deep)."""

    def __init__(self, line: int):
        self.line = line


def parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """(node tree, data) of a YAML text, parsed once with the safe loader. Nesting deeper than
    MAX_YAML_DEPTH raises YamlTooDeep first: PyYAML's composer recurses once per level and takes
    seconds to fail with a RecursionError on a few kilobytes of '['."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):  # the event parser does not recurse
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise YamlTooDeep(event.start_mark.line + 1)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return node, (loader.construct_document(node) if node is not None else None)
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a YAML mapping safely; return it with the origin ('file line N') of every key.

    A path that does not exist may name a packaged recipe: `harmful`, `harmful.yaml` or
    `recipes/harmful.yaml` (see `unlearn recipes`)."""
    p = Path(path)
    if not p.exists():
        from unlearn.recipes import available_recipes, find_recipe

        recipe = find_recipe(p)
        if recipe is None:
            names = ", ".join(r.name for r in available_recipes())
            raise UnlearnError(f"{p}: config file not found (packaged recipes: {names})")
        p = recipe
    if p.is_dir():
        raise UnlearnError(f"{p}: is a folder, expected a YAML config file")
    try:
        text = p.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UnlearnError(f"{p}: not valid UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise UnlearnError(f"{p}: cannot read ({e.strerror})") from None
    try:
        node, data = parse_yaml(text)
    except YamlTooDeep as e:
        raise UnlearnError(f"{p} line {e.line}: YAML nested more than {MAX_YAML_DEPTH} levels deep") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or [type(e).__name__])[0]
        raise UnlearnError(f"{p}{line}: YAML syntax error: {problem}") from None
    except RecursionError:
        raise UnlearnError(f"{p}: YAML nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UnlearnError(f"{p} line 1: expected a mapping of sections, got {type(data).__name__}")
    origins: dict[str, str] = {"": str(p)}
    if node is not None:
        try:
            _record_lines(node, "", str(p), origins)
        except RecursionError:
            raise UnlearnError(f"{p}: YAML nested too deeply") from None
    return data, origins
