"""The package's shape, checked from the source: the layer order of docs/architecture.md, no import
cycles, no private names borrowed across modules, and a light `import unlearn`.

Every `import` statement counts, also those inside functions: a lazy import is still a dependency,
and one that runs against the layer order is a cycle waiting for its first eager import.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "unlearn"

# Lowest first: a module may import from its own layer and the layers before it, never after it.
# The same list, with what each layer is for, is in docs/architecture.md ("The layers").
# An entry is a top-level name under unlearn/ or, for the registries, a dotted module path (the
# longest match wins): a registry holds names and imports its members by name (unlearn.discovery),
# so the config schema below the members may ask it which names exist.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "version", "files", "runstate", "memory", "discovery"),
    ("objective.presets", "evaluate.metrics.registry", "evaluate.judges.registry", "auditing.rewrites",
     "benchmarks.registry"),
    ("recipes",),
    ("config",),
    ("data",),
    ("models",),
    ("objective",),
    ("distributed",),
    ("train",),
    ("evaluate",),
    ("auditing",),
    ("benchmarks",),
    ("report",),
    ("api",),
    ("comparison", "demo", "forgetting"),
    ("cli", "cli_forget", "__init__", "__main__"),
]


@dataclass(frozen=True)
class Import:
    importer: str  # dotted module name, e.g. unlearn.train.loop
    target: str  # the module imported from, e.g. unlearn.models.forward
    names: tuple[str, ...]  # the names taken from it (empty for `import x`)
    line: int

    def where(self) -> str:
        return f"{self.importer.replace('.', '/')}.py:{self.line}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if is_package(path) else name.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [Import(name, a.name, (), node.lineno) for a in node.names if a.name.split(".")[0] == "unlearn"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "unlearn":
                found.append(Import(name, target, tuple(a.name for a in node.names), node.lineno))
    return found


def all_imports() -> list[Import]:
    return [i for name, path in modules().items() for i in imports_of(name, path)]


def resolve(target: str, names: tuple[str, ...], known: dict[str, Path]) -> list[str]:
    """The modules an import depends on: `from unlearn.x import y` takes y from unlearn.x, or, when
    y is a submodule, unlearn.x.y (as `import unlearn.x.y` would: every import of a submodule runs
    its parents' __init__, which is no dependency of its own)."""
    subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
    if names and len(subs) == len(names):
        return subs
    return ([target] if target in known else []) + subs


def layer_of(module: str) -> int:
    parts = module.split(".")[1:] or ["__init__"]
    for n in range(len(parts), 0, -1):
        key = ".".join(parts[:n])
        for i, group in enumerate(LAYERS):
            if key in group:
                return i
    raise AssertionError(f"{module}: its top-level name '{parts[0]}' is in no layer; add it to LAYERS and docs/architecture.md")


def test_every_module_has_a_layer():
    for name in modules():
        layer_of(name)


def test_imports_follow_the_layer_order():
    bad = [
        f"{i.where()}: {i.importer} (layer {layer_of(i.importer)}) imports {i.target} (layer {layer_of(i.target)})"
        for i in all_imports()
        if layer_of(i.target) > layer_of(i.importer)
    ]
    assert not bad, "imports against the layer order:\n" + "\n".join(bad)


def test_no_submodule_imports_the_package_root():
    """The root (`unlearn/__init__.py`) is the public API and imports lazily; a submodule that imports
    it back makes a cycle that depends on import order."""
    bad = [i.where() for i in all_imports() if i.target == "unlearn" and i.importer not in ("unlearn", "unlearn.__main__")]
    assert not bad, f"these import the package root: {bad}"


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph: dict[str, set[str]] = {n: set() for n in known}
    for i in all_imports():
        for t in resolve(i.target, i.names, known):
            # A package's own __init__ importing its submodules is how a package exposes them; the
            # submodule importing a sibling, or the package back, is what makes a cycle.
            if t != i.importer:
                graph[i.importer].add(t)
    return graph


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def private_owner(i: Import) -> list[str]:
    """What the import takes that is private to another module: a `_name` from a module, or anything
    from a `_module` outside the package that holds it."""
    bad = [f"{i.target}.{n}" for n in i.names if n.startswith("_") and n != "__version__" and i.target != i.importer]
    parts = i.target.split(".")
    for k, part in enumerate(parts):
        if part.startswith("_") and part != "__init__":
            owner = ".".join(parts[:k])
            if not (i.importer == owner or i.importer.startswith(owner + ".")):
                bad.append(i.target)
    return bad


def test_no_module_imports_another_modules_private_names():
    bad = [f"{i.where()}: {name}" for i in all_imports() for name in private_owner(i)]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_private_check_can_fail():
    assert private_owner(Import("unlearn.compare", "unlearn.report", ("_e",), 1)) == ["unlearn.report._e"]
    assert private_owner(Import("unlearn.data.sources.text", "unlearn.data.sources._common", ("text",), 1)) == []
    assert private_owner(Import("unlearn.train.loop", "unlearn.data.sources._common", ("text",), 1))


def test_layer_check_can_fail():
    assert layer_of("unlearn.config.schema") < layer_of("unlearn.evaluate.run")
    assert layer_of("unlearn.errors") == 0 and layer_of("unlearn") == len(LAYERS) - 1
    assert layer_of("unlearn.evaluate.metrics.registry") < layer_of("unlearn.config") < layer_of("unlearn.evaluate.metrics.text")


def test_no_file_under_src_is_over_400_lines():
    long = {str(p.relative_to(SRC)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 400}
    assert not long, f"over 400 lines: {long}"


def _python(code: str) -> str:
    """Run `code` in a fresh interpreter (nothing imported yet) and return its stdout."""
    env_path = str(SRC)
    out = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r})\n{code}"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_import_unlearn_loads_neither_torch_nor_transformers():
    loaded = json.loads(_python(
        "import json, unlearn; print(json.dumps([m for m in ('torch', 'transformers', 'matplotlib', 'peft') "
        "if m in sys.modules]))"
    ))
    assert loaded == []


def test_unlearn_compare_stays_the_function_whatever_is_imported():
    """Every submodule imported (comparison's and report's among them), then the root's names."""
    out = _python(
        "import importlib, pkgutil, unlearn\n"
        "names = sorted(m.name for m in pkgutil.walk_packages(unlearn.__path__, 'unlearn.') if not m.name.endswith('__main__'))\n"
        "assert 'unlearn.comparison.worker' in names and 'unlearn.report.write' in names, names\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "import unlearn.comparison\n"
        "from unlearn import compare, run, run_eval, finetune, CompareResult\n"
        "print(compare is unlearn.compare is unlearn.comparison.compare, callable(unlearn.compare),\n"
        "      run is unlearn.api.run, CompareResult is unlearn.comparison.CompareResult)\n"
    )
    assert out.split() == ["True", "True", "True", "True"]


def test_the_training_loop_reads_in_one_sitting():
    """The loop itself (unlearn/train/loop.py: loop) is at most 150 lines; setup, the step and
    checkpoints live in their own modules."""
    tree = ast.parse((PACKAGE / "train" / "loop.py").read_text())
    fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "loop")
    assert fn.end_lineno - fn.lineno + 1 <= 150
