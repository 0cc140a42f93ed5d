"""The field's benchmarks (TOFU, MUSE, WMDP, lm-evaluation-harness tasks), run on the original and
the unlearned model by `unlearn eval` when the config names them in `eval.benchmarks`.

    registry   names, parameters and metrics of each benchmark (a low layer: the config asks it)
    probe      one loaded model, as a benchmark sees it: answer likelihoods, token statistics, generation
    run        plan (read and check every benchmark's data before any model loads), then measure each
               model and summarise across models (metrics.json's "benchmarks")

A benchmark is one module of this package (or of a plugin named in `imports:`) that calls
`register_benchmark`; see docs/benchmarks.md.
"""
