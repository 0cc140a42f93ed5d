"""Evaluation during training (train.eval_every): the fast metrics on a few prompts.

The metric registry says which metrics are fast and under which key they are logged
(unlearn.evaluate.metrics.fast_metrics): today the leak rate and NLL on eval.fast_examples forget
prompts (the val part with eval.split), retain accuracy and NLL on as many retain prompts.

`score` = sum of eval.trade_off weight x metric: what train.keep_best maximises. The training loop
receives an instance as its `evaluator` callback (see unlearn.api), so unlearn.train never imports this.
"""

from __future__ import annotations

from typing import Any

from unlearn.config import Config
from unlearn.errors import UnlearnError
from unlearn.evaluate.generate import generate
from unlearn.evaluate.metrics import SetScoring, fast_metrics, get_metric
from unlearn.evaluate.run import set_encoder, settings_of, target_nll
from unlearn.evaluate.sets import EvalSet, load_eval_sets, validation_set


class TrainingEvaluator:
    """Called as evaluator(model, tokenizer, step) -> {metric: value, ..., 'score': value}."""

    def __init__(self, cfg: Config):
        from unlearn.models import load_tokenizer

        self.cfg = cfg
        tokenizer = load_tokenizer(cfg.model)
        roles = [r for r, src in (("forget", cfg.data.forget or cfg.eval.forget),
                                  ("retain", cfg.data.retain or cfg.eval.retain)) if src is not None]
        if not roles:
            raise UnlearnError(f"{cfg.origin('train.eval_every')}: train.eval_every needs forget or retain data")
        sets = load_eval_sets(cfg, tokenizer, roles)
        forget = validation_set(cfg, tokenizer) or sets.get("forget")
        n = cfg.eval.fast_examples
        self.sets: dict[str, EvalSet] = {}
        if forget is not None:
            self.sets["forget"] = forget.head(n)
        if "retain" in sets:
            self.sets["retain"] = sets["retain"].head(n)
        self.fast = [f for f in fast_metrics() if f.set in self.sets]
        available = [f.key for f in self.fast]
        missing = [k for k in cfg.eval.trade_off if k not in available]
        if missing and cfg.train.keep_best:
            raise UnlearnError(
                f"{cfg.origin('eval.trade_off')}: eval.trade_off weights {', '.join(missing)}, which this "
                f"config cannot measure (available: {', '.join(available)})"
            )

    def __call__(self, model: Any, tokenizer: Any, step: int) -> dict[str, float]:
        cfg, e = self.cfg, self.cfg.eval
        settings = settings_of(cfg)
        values: dict[str, float] = {}
        for role, s in self.sets.items():
            enc = set_encoder(cfg, tokenizer, s)
            outputs = generate(model, enc, s.prompts, settings, raw=s.kind == "text")
            x = SetScoring(set=s, outputs=outputs, settings=e, nll=target_nll(model, enc, s, e.batch_size))
            for f in self.fast:
                if f.set == role:
                    # several metrics may share a key (leak rate, extraction leak rate): the one that applies
                    m = next((m for name in f.metrics if (m := get_metric(name).compute(x)) is not None), None)
                    if m is not None:
                        values[f.key] = m.value
        values = {k: round(v, 4) for k, v in values.items()}
        values["score"] = round(sum(w * values.get(k, 0.0) for k, w in e.trade_off.items()), 4)
        return values
