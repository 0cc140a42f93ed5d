"""unlearn: make a language model stop producing specific outputs, from examples of those outputs.

    from unlearn import load_config, run, run_eval
    result = run(load_config("unlearn.yaml", ["train.max_steps=200"]))
    report = run_eval(load_config("unlearn.yaml"))        # writes OUTPUT_DIR/eval
    report.metrics["metrics"]["forget"]["leak_rate"]      # {"original": .., "unlearned": .., "change": ..}
    table = compare("unlearn.yaml", methods="paper,ga,npo")  # writes OUTPUT_DIR/compare
    attacks = audit("unlearn.yaml")                        # writes OUTPUT_DIR/audit: is it really gone?
    res = forget("smollm2-135m", "prompts.txt", judge="topic")  # collect, unlearn, stop, evaluate: res.model

implements Yao, Xu, Liu, "Large Language Model Unlearning" (NeurIPS 2024): gradient ascent on the
bad responses, a random-mismatch loss and forward KL to the original model on normal data.

`import unlearn` is light (no torch, no transformers): the API functions live in unlearn.api and
unlearn.comparison and are loaded on first use. No module of the package imports this root.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from unlearn.config import Config, load_config
from unlearn.errors import UnlearnError
from unlearn.version import __version__

if TYPE_CHECKING:
    from unlearn.api import audit, finetune, run, run_eval
    from unlearn.comparison import CompareResult, compare
    from unlearn.forgetting.run import ForgetResult, forget
    from unlearn.forgetting.run import collect_data as collect

# Public name -> the module that defines it, imported when the name is first used.
_LAZY = {
    "run": "unlearn.api", "finetune": "unlearn.api", "run_eval": "unlearn.api", "audit": "unlearn.api",
    "compare": "unlearn.comparison", "CompareResult": "unlearn.comparison",
    "forget": "unlearn.forgetting.run", "ForgetResult": "unlearn.forgetting.run",
    "collect": "unlearn.forgetting.run",
}

__all__ = [
    "CompareResult", "Config", "ForgetResult", "UnlearnError", "audit", "collect", "compare", "finetune", "forget",
    "load_config", "run", "run_eval", "__version__",
]


def __getattr__(name: str) -> Any:
    # The comparison's module is unlearn.comparison, not unlearn.compare (and the audit's
    # unlearn.auditing, not unlearn.audit): a submodule of that name would replace the function as
    # the package's attribute whenever it is imported.
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        value = getattr(module, "collect_data" if name == "collect" else name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'unlearn' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
