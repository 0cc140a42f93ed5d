"""The methods of `unlearn compare`, checked before anything runs: names, each method's config
(the preset's objective with the config's term parameters), its term modules, the output folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, Union

from unlearn.config import Config, config_from_dict
from unlearn.objective.presets import PRESETS, preset_names
from unlearn.errors import UnlearnError

DEFAULT_METHODS = ("paper", "ga", "graddiff", "npo", "simnpo", "idk")


def parse_methods(methods: Union[str, Sequence[str]]) -> list[str]:
    """Method names from 'paper,ga' or a list; UnlearnError for an unknown, repeated or empty one."""
    items = methods.split(",") if isinstance(methods, str) else [m for s in methods for m in str(s).split(",")]
    names = [m.strip() for m in items]
    known = preset_names()  # the term modules' presets too (undial, pdu, ...)
    if not names or any(not m for m in names):
        raise UnlearnError(f"--methods: expected comma-separated preset names, got '{','.join(items)}'; "
                           f"presets: {', '.join(known)}")
    unknown = [m for m in names if m not in known]
    if unknown:
        raise UnlearnError(f"--methods: unknown method(s) {', '.join(unknown)}; methods (objective presets): "
                           f"{', '.join(known)}")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise UnlearnError(f"--methods: {', '.join(repeated)} given more than once")
    return names


def method_objective(cfg: Config, method: str) -> dict[str, Any]:
    """The preset's weights, with the parameters the config gives any of its terms."""
    out: dict[str, Any] = {}
    for term, weight in PRESETS[method].items():
        spec = cfg.objective.get(term)
        params = {k: v for k, v in spec.items() if k != "weight"} if isinstance(spec, dict) else {}
        out[term] = {"weight": weight, **params} if params else weight
    return out


def method_config(cfg: Config, method: str, output_dir: Path) -> Config:
    """cfg with the objective of `method` and its own output_dir (checked like any config)."""
    data = cfg.to_dict()
    data["objective"] = method_objective(cfg, method)
    data["output_dir"] = str(output_dir)
    origins = {k: v for k, v in cfg.origins.items()
               if not (k.startswith("objective") or k.startswith("=objective") or k == "output_dir")}
    origins["objective"] = f"--methods {method}"
    origins["output_dir"] = "unlearn compare"
    return config_from_dict(data, [], origins)


def term_modules(cfg: Config, method: str) -> list[str]:
    """Check the method's objective; return the modules its process must import to know its terms:
    those registered outside unlearn (one registered in __main__ cannot be found from there)."""
    from unlearn.objective import Objective, available_terms

    Objective(cfg.objective, where=cfg.origin)  # term names and parameters, checked here for every method
    terms = available_terms()
    modules = []
    for name in cfg.objective:
        mod = terms[name].fn.__module__ if name in terms else "unlearn"
        if mod == "__main__":
            raise UnlearnError(
                f"--methods {method}: loss term '{name}' is registered in __main__; each method runs in its "
                "own process, so register it in an importable module"
            )
        if not mod.startswith("unlearn.") and mod not in modules:
            modules.append(mod)
    return modules


def check_folder(cfg: Config, folder: Path, overwrite: bool) -> None:
    """OUTPUT_DIR/compare may be written: absent, or an earlier comparison with overwrite (and
    then not holding an input of the run)."""
    from unlearn.files import check_writable, refuse_dangerous_overwrite
    from unlearn.train import run_inputs

    if folder.exists() or folder.is_symlink():
        if not folder.is_dir() or folder.is_symlink():
            raise UnlearnError(f"'{folder}' exists and is not a folder; remove it or choose another output_dir")
        if not overwrite:
            raise UnlearnError(f"'{folder}' exists (an earlier comparison); pass --overwrite to replace it")
        refuse_dangerous_overwrite(folder, run_inputs(cfg, with_eval=True))
    check_writable(folder)
