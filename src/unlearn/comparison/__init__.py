"""`unlearn compare`: several unlearning methods on the same data, steps, seed and evaluation.

    run.py      compare(): checks, the original model's process, one process per method,
                compare.json's data (the files are unlearn.report's)
    methods.py  method names, each method's config, the checks made before anything runs
    worker.py   the process each method runs in, and the job/result files it speaks

The package is `comparison`, not `compare`, so that `unlearn.compare` stays the function: a
submodule named `compare` would replace it as the package's attribute once imported.
"""

from unlearn.comparison.methods import DEFAULT_METHODS, method_config, method_objective, parse_methods
from unlearn.comparison.run import CompareResult, compare, read_result

__all__ = ["DEFAULT_METHODS", "CompareResult", "compare", "method_config", "method_objective", "parse_methods",
           "read_result"]
