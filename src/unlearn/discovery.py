"""How registries find their members, in one place.

A registry (terms, presets, metrics, judges, dataset adapters) holds names; its members register
themselves when their module is imported. The registry imports them by the package's NAME, on the
first look-up, so that a registry module depends on nothing but this foundation layer and the
config schema may ask it for names without loading the members (or torch).

A package whose namespace re-exports its members does it lazily with `lazy_exports`, for the same
reason: importing `pkg.registry` runs `pkg/__init__.py` first, and that must stay cheap.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")

_done: set[str] = set()


def import_submodules(package: str) -> None:
    """Import every module of `package` (by dotted name) once, so that their registrations run."""
    if package in _done:
        return
    _done.add(package)
    pkg = importlib.import_module(package)
    for mod in pkgutil.iter_modules(pkg.__path__):
        importlib.import_module(f"{package}.{mod.name}")


class Registry(Generic[T]):
    """The names of one kind of thing (`kind`: "loss term", "judge", ...), each registered once by
    the module that defines it. The modules of `package` are imported on the first look-up, so a
    name registered anywhere in the package is found without a hand-kept list."""

    def __init__(self, kind: str, package: str):
        self.kind, self.package = kind, package
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> None:
        """Register `item` as `name`; registering a name twice is an error (a bug, not user input)."""
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item

    def entries(self) -> dict[str, T]:
        """Every registered name -> item, in registration order (the package's modules imported
        first). The dict is the registry's own: read it, don't write it."""
        import_submodules(self.package)
        return self._items


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], list[str]]:
    """A module `__getattr__` for `package` and its `__all__`. `exports` maps each submodule's name
    to the public names it defines, space-separated; a name is imported on first use.

        __getattr__, __all__ = lazy_exports(__name__, {"registry": "Judge register_judge", ...})
    """
    where = {name: module for module, names in exports.items() for name in names.split()}

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__, sorted(where)
