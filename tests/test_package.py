"""The package's shape: `import unlearn` is light, `unlearn.compare` is the function whatever is
imported, no submodule imports the package root (an import cycle), the presentation modules use
no other module's private names, and no source file is over 400 lines."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "unlearn"
# The modules of issue 13's presentation part (report/, comparison/ and the API around them).
PRESENTATION = ["report", "comparison", "api.py", "cli.py", "demo.py", "memory.py", "__init__.py"]


def _python(code: str) -> str:
    """Run `code` in a fresh interpreter (nothing imported yet) and return its stdout."""
    env_path = str(SRC.parent)
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


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, module, names) of every import in a file, at any depth (lazy imports too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module, [a.name for a in node.names]))
    return found


def test_no_submodule_imports_the_package_root():
    """The root re-exports lazily from its submodules; a submodule importing the root back would be
    a cycle (and would load whatever the root loads)."""
    bad = [f"{p.relative_to(SRC)}:{line}" for p in SRC.rglob("*.py") if p != SRC / "__init__.py"
           for line, module, _ in _imports(p) if module == "unlearn"]
    assert bad == []


def test_presentation_modules_import_no_private_names():
    files = [f for name in PRESENTATION for f in ([SRC / name] if name.endswith(".py") else (SRC / name).rglob("*.py"))]
    assert len(files) > 10
    bad = [f"{p.relative_to(SRC)}:{line} {module}.{n}" for p in files for line, module, names in _imports(p)
           if module.startswith("unlearn") for n in names if n.startswith("_") and not n.startswith("__")]
    assert bad == []


def test_presentation_modules_are_at_most_400_lines():
    files = [f for name in PRESENTATION for f in ([SRC / name] if name.endswith(".py") else (SRC / name).rglob("*.py"))]
    long = {str(p.relative_to(SRC)): n for p in files if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}
