"""Reading a config: YAML with the line of every key, dotted overrides, and typed construction.

    cfg = load_config("unlearn.yaml", ["train.lr=1e-5", "objective.kl=2"])

Every mistake ends in one UnlearnError line naming the file, the line and the key: YAML syntax,
unknown keys (the valid ones listed), wrong types, values a section's __post_init__ rejects.
`build` makes any schema dataclass from plain data this way (the loss terms' parameters too).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Callable, Literal, Union

import yaml

from unlearn.config.fields import InvalidValue, as_float
from unlearn.config.reading import YamlTooDeep, parse_yaml, read_yaml
from unlearn.config.schema import Config
from unlearn.errors import UnlearnError, text_problem
from unlearn.objective.presets import DEFAULT_PRESET, preset_names, preset_weights

# --------------------------------------------------------------------------------------------
# Building dataclasses from plain data, with type checks


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        return "a list"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        tp, str(tp)
    )


class _Mismatch(Exception):
    pass


def _coerce(tp: Any, value: Any, key: str, origins: Origins) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise _Mismatch
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, key, origins)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in typing.get_args(tp):
            return value
        raise _Mismatch
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, f"{key}.{i}", origins) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        _, val_tp = typing.get_args(tp)
        return {str(k): _coerce(val_tp, v, f"{key}.{k}", origins) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _Mismatch
        return build(tp, value, key, origins)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if tp is float:
        f = as_float(value)
        if f is None:
            raise _Mismatch
        if not math.isfinite(f):
            raise UnlearnError(f"{_loc(origins, key)}: must be a finite number, got {f}")
        return f
    if tp is str:
        if isinstance(value, str):
            _check_text(value, key, origins)
            return value
        raise _Mismatch
    raise TypeError(f"unsupported config type {tp!r}")  # a bug in this module, not user input


def _check_text(value: str, key: str, origins: Origins) -> None:
    """Strings become paths, model names and training text (see errors.text_problem)."""
    problem = text_problem(value)
    if problem:
        raise UnlearnError(f"{_loc(origins, key)}: {problem}")


# Where keys were set: {"dotted.key": "file line N", ...} (as read_yaml returns), or a function of
# the dotted key (Config.origin) for data checked after loading, such as the loss terms' parameters.
Origins = Union[dict[str, str], Callable[[str], str]]


def _where(origins: Origins, key: str) -> str:
    if callable(origins):
        return origins(key)
    k = key
    while k:
        if k in origins:
            return origins[k]
        k = k.rpartition(".")[0]
    return origins.get("", "config")


def _loc(origins: Origins, key: str) -> str:
    return f"{_where(origins, key)}: {key}"


def build(cls: type, data: dict[str, Any], prefix: str, origins: Origins) -> Any:
    """Build dataclass `cls` from a mapping, raising UnlearnError with file/line for any mistake."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.name.startswith("_")}
    section = prefix or "the top level"
    for key in data:
        if key not in fields:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise UnlearnError(
                f"{_loc(origins, full)}: unknown key '{key}' in {section}; valid keys: "
                + ", ".join(fields)
            )
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        full = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                where = origins(prefix) if callable(origins) else origins.get(prefix, origins.get("", "config"))
                raise UnlearnError(f"{where}: {full}: required key is missing ({f.metadata['help']})")
            continue
        try:
            kwargs[name] = _coerce(hints[name], data[name], full, origins)
        except _Mismatch:
            raw = None if callable(origins) else origins.get("=" + full)
            if raw is not None:  # an override's raw text, e.g. data.template={prompt}: {response}
                try:
                    kwargs[name] = _coerce(hints[name], raw, full, origins)
                    continue
                except _Mismatch:
                    pass
            got = data[name]
            shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
            shown = shown if len(shown) <= 80 else shown[:77] + "..."
            raise UnlearnError(
                f"{_loc(origins, full)}: expected {_type_name(hints[name])}, got {shown}"
            ) from None
    try:
        obj = cls(**kwargs)
    except InvalidValue as e:
        full = f"{prefix}.{e.key}" if prefix else e.key
        raise UnlearnError(f"{_loc(origins, full)}: {e.message}") from None
    if cls is Config:
        obj._origins = {k: v for k, v in origins.items() if not k.startswith("=")}
    return obj


# --------------------------------------------------------------------------------------------
# Overrides and the whole config


def apply_override(data: dict[str, Any], override: str, origins: dict[str, str]) -> None:
    """Apply one `section.key=value` override in place (value parsed as YAML)."""
    shown = override if len(override) <= 80 else override[:77] + "..."
    if "=" not in override:
        raise UnlearnError(f"command line: '{shown}': expected section.key=value")
    key, _, raw = override.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UnlearnError(f"command line: '{shown}': expected section.key=value")
    try:
        value = parse_yaml(raw)[1] if raw.strip() else ""
    except (yaml.YAMLError, RecursionError, YamlTooDeep):
        value = raw
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if i == 0 and part == "objective" and (nxt is None or isinstance(nxt, str)):
            # `objective.kl=2` edits the configured preset (default: paper), not an empty objective.
            preset = DEFAULT_PRESET if nxt is None else nxt
            weights = preset_weights(preset)
            if weights is None:
                raise UnlearnError(
                    f"command line: '{override}': unknown objective preset '{preset}'; "
                    f"presets: {', '.join(preset_names())}"
                )
            nxt = weights
            node[part] = nxt
        elif nxt is None:
            nxt = {}
            node[part] = nxt
        elif i == 1 and parts[0] == "objective" and isinstance(nxt, (int, float)) and not isinstance(nxt, bool):
            # `objective.npo.beta=0.2` gives a term given by its weight a parameter.
            nxt = {"weight": nxt}
            node[part] = nxt
        if not isinstance(nxt, dict):
            raise UnlearnError(
                f"command line: '{override}': {'.'.join(parts[: i + 1])} is not a section"
            )
        node = nxt
    node[parts[-1]] = value
    origins[key] = f"command line '{shown}'"
    origins["=" + key] = raw  # kept for string fields whose text YAML reads as something else
    # Keys below an overridden key no longer come from the file.
    for k in [k for k in origins if k.startswith(key + ".")]:
        origins[k] = f"command line '{shown}'"


def config_from_dict(
    data: dict[str, Any], overrides: list[str] | None = None, origins: dict[str, str] | None = None
) -> Config:
    """Build a Config from plain data (as read from YAML) plus dotted overrides."""
    import copy

    data = copy.deepcopy(data)
    origins = dict(origins or {"": "config"})
    import_modules(data.get("imports"), origins)  # before overrides: they may name what these register
    for ov in overrides or []:
        apply_override(data, ov, origins)
    import_modules(data.get("imports"), origins)  # and any an override added
    return build(Config, data, "", origins)


def import_modules(modules: Any, origins: Origins) -> None:
    """Import the config's `imports` (so what they register can be named in it). Anything but a list
    of strings is left for build to report."""
    import importlib

    if not isinstance(modules, list) or not all(isinstance(m, str) for m in modules):
        return
    for i, name in enumerate(modules):
        try:
            importlib.import_module(name)
        except Exception as e:  # ImportError, or whatever the module raises while it registers
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UnlearnError(f"{_loc(origins, f'imports.{i}')}: cannot import module '{name}': {msg}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file and apply `section.key=value` overrides.

    Raises UnlearnError (one line, naming file, line and key) for any mistake.
    """
    data, origins = read_yaml(path)
    return config_from_dict(data, overrides, origins)


def describe_keys(cls: type = Config, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, help) for every key, for docs and `unlearn config --keys`."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name.startswith("_"):
            continue
        key = f"{prefix}{f.name}"
        tp = hints[f.name]
        sub = [a for a in (typing.get_args(tp) or (tp,)) if dataclasses.is_dataclass(a)]
        if f.default is not dataclasses.MISSING:
            default = repr(f.default) if f.default is not None else "null"
        elif f.default_factory is not dataclasses.MISSING:
            d = f.default_factory()
            default = "" if dataclasses.is_dataclass(d) else repr(d)
        else:
            default = "(required)"
        rows.append((key, _type_name(tp), default, f.metadata.get("help", "")))
        for s in sub:
            rows.extend(describe_keys(s, key + "."))
    return rows
