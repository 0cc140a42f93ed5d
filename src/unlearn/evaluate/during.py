"""Evaluation during training (train.eval_every): a fast subset of the metrics on a few prompts.

    forget_leak_rate   leak rate on eval.fast_examples forget prompts (the val part with eval.split)
    forget_nll         their teacher-forced NLL per response token
    retain_accuracy    retain accuracy on eval.fast_examples retain prompts
    retain_nll         their NLL

`score` = sum of eval.trade_off weight x metric: what train.keep_best maximises. The training loop
receives an instance as its `evaluator` callback (see unlearn.run), so train.py never imports this.
"""

from __future__ import annotations

from typing import Any

from unlearn.config import Config
from unlearn.errors import UnlearnError
from unlearn.evaluate import metrics as M
from unlearn.evaluate.generate import generate
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
        available = [k for k, role in (("forget_leak_rate", "forget"), ("forget_nll", "forget"),
                                       ("retain_accuracy", "retain"), ("retain_nll", "retain")) if role in self.sets]
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
            answers = [i.answers for i in s.items] if s.match == "contains" else None
            if role == "forget":
                if s.kind == "text":
                    leak = M.extraction_leak_rate(outputs, s.targets, threshold=e.bleu_threshold)
                else:
                    leak = M.leak_rate(outputs, s.targets, threshold=e.bleu_threshold, answers=answers)
                values["forget_leak_rate"] = leak.value
                values["forget_nll"] = M.nll(target_nll(model, enc, s, e.batch_size)).value
            else:
                values["retain_accuracy"] = M.retain_accuracy(
                    outputs, s.targets, threshold=e.bleu_threshold, answers=answers
                ).value
                values["retain_nll"] = M.nll(target_nll(model, enc, s, e.batch_size)).value
        values = {k: round(v, 4) for k, v in values.items()}
        values["score"] = round(sum(w * values.get(k, 0.0) for k, w in e.trade_off.items()), 4)
        return values
