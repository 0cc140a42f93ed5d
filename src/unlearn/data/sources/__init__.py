"""Named dataset adapters: `forget: {dataset: NAME, path: ...}` in a config.

An adapter turns the rows of a known public data set (from a local copy, or the hub when online)
into prompt/response Examples. Register one with:

    @register_source("truthfulqa", schema="question, best_answer, ...", hub="truthfulqa/truthful_qa")
    def truthfulqa(source: SourceConfig, role: str) -> list[Example]:
        '''One line for `unlearn datasets`.'''

`role` is the config key asking ("forget", "retain", "mismatch", or an evaluation set such as
"forget_test", "normal") for adapters whose examples depend on it. Modules whose name starts with
an underscore hold shared helpers and register nothing.
"""

from __future__ import annotations

from typing import Callable

from unlearn.discovery import Registry
from unlearn.errors import UnlearnError

SourceFn = Callable[..., list]
_SOURCES: Registry[SourceFn] = Registry("dataset adapter", __name__)


def register_source(name: str, *, schema: str = "", hub: str | None = None) -> Callable[[SourceFn], SourceFn]:
    """Register a dataset adapter. schema: the fields it expects (shown by `unlearn datasets`);
    hub: the Hugging Face dataset it loads when no path is given."""

    def deco(fn: SourceFn) -> SourceFn:
        fn.schema = schema  # type: ignore[attr-defined]
        fn.hub = hub  # type: ignore[attr-defined]
        _SOURCES.add(name, fn)
        return fn

    return deco


def get_source(name: str) -> SourceFn:
    sources = _SOURCES.entries()
    if name not in sources:
        known = ", ".join(sorted(sources)) or "(none)"
        raise UnlearnError(f"unknown dataset adapter '{name}'; known: {known}")
    return sources[name]


def available_sources() -> list[str]:
    return sorted(_SOURCES.entries())

