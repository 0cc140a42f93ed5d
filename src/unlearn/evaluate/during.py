"""Evaluation during training (train.eval_every): the fast metrics on a few prompts, and the stop rule.

The metric registry says which metrics are fast and under which key they are logged
(unlearn.evaluate.metrics.fast_metrics): the leak rate, the harmful rate (with eval.judge), the
hallucination rate and NLL on eval.fast_examples forget prompts (the val part with eval.split),
retain accuracy and NLL on as many retain prompts, and on as many normal prompts the cosine to the
original model's outputs and the share of the most frequent answer.

Before the first step (`start`) the same prompts are asked of the original model: the baseline
that retain accuracy, the normal-prompt cosine and collapse are judged against. Every evaluation
then says whether the model has `collapsed` (the report's rule, eval.verdict, on these prompts);
train.keep_best never keeps a collapsed model. With train.stop_when_forgotten the evaluation also
answers "forgotten, with utility kept?" by the report's verdict (unlearn.evaluate.verdict) on the
fast metrics, and asks the loop to stop when it is.

`score` = sum of eval.trade_off weight x metric: what train.keep_best maximises. The training loop
receives an instance as its `evaluator` callback (see unlearn.api), so unlearn.train never imports this.
"""

from __future__ import annotations

from typing import Any, Optional

from unlearn.config import Config
from unlearn.errors import UnlearnError
from unlearn.evaluate.generate import generate
from unlearn.evaluate.metrics import SetScoring, fast_metrics, get_metric
from unlearn.evaluate.metrics.registry import direction
from unlearn.evaluate.forced import set_encoder, target_nll
from unlearn.evaluate.run import settings_of
from unlearn.evaluate.sets import EvalSet, load_eval_sets, validation_set
from unlearn.evaluate.verdict import verdict


class TrainingEvaluator:
    """Called as evaluator(model, tokenizer, step) -> {metric: value, ..., 'score': value,
    'collapsed': bool, and with train.stop_when_forgotten 'forgotten', 'utility_kept' and, when
    both hold, 'stop': the reason}."""

    def __init__(self, cfg: Config):
        from unlearn.models import load_tokenizer

        self.cfg = cfg
        tokenizer = load_tokenizer(cfg.model)
        roles = [r for r, src in (("forget", cfg.data.forget or cfg.eval.forget),
                                  ("retain", cfg.data.retain or cfg.eval.retain),
                                  ("normal", cfg.eval.normal)) if src is not None]
        if not [r for r in roles if r != "normal"]:
            raise UnlearnError(f"{cfg.origin('train.eval_every')}: train.eval_every needs forget or retain data")
        sets = load_eval_sets(cfg, tokenizer, roles)
        forget = validation_set(cfg, tokenizer) or sets.get("forget")
        n = cfg.eval.fast_examples
        self.sets: dict[str, EvalSet] = {}
        if forget is not None:
            self.sets["forget"] = forget.head(n)
        for role in ("retain", "normal"):
            if role in sets:
                self.sets[role] = sets[role].head(n)
        self.fast = [f for f in fast_metrics() if f.set in self.sets]
        self.judge: Any = None
        self.embedder: Any = None
        self.baseline: Optional[dict[tuple[str, str], Optional[float]]] = None
        self.original_outputs: dict[str, list[str]] = {}
        available = self.available_keys()
        missing = [k for k in cfg.eval.trade_off if k not in available]
        if missing and cfg.train.keep_best:
            raise UnlearnError(
                f"{cfg.origin('eval.trade_off')}: eval.trade_off weights {', '.join(missing)}, which this "
                f"config cannot measure (available: {', '.join(available)})"
            )

    def available_keys(self) -> list[str]:
        """The fast keys this config can measure (a harmful rate needs eval.judge)."""
        keys = []
        for f in self.fast:
            if f.key == "forget_harmful_rate" and not self.cfg.eval.judge:
                continue
            if f.key == "forget_hallucination_rate" and not self.sets["forget"].has_hallucinated:
                continue
            keys.append(f.key)
        return list(dict.fromkeys(keys))

    def _load_helpers(self) -> None:
        """The judge and the sentence embedder, once, on first use (both run on the CPU)."""
        e = self.cfg.eval
        needs_embedder = "normal" in self.sets or bool(e.judge) or (
            "forget" in self.sets and self.sets["forget"].has_hallucinated)
        if needs_embedder and self.embedder is None:
            from unlearn.evaluate.embed import Embedder

            self.embedder = Embedder(e.embedding_model, "cpu")
        if e.judge and self.judge is None:
            from unlearn.evaluate.judges.registry import load_judge

            self.judge = load_judge(e.judge, e, "cpu", embedder=self.embedder)

    def measure(self, model: Any, tokenizer: Any) -> tuple[dict[tuple[str, str], Optional[float]], dict[str, list[str]]]:
        """{(set, metric name): value} of every fast metric, and each set's outputs."""
        cfg, e = self.cfg, self.cfg.eval
        self._load_helpers()
        settings = settings_of(cfg)
        found: dict[tuple[str, str], Optional[float]] = {}
        outputs_of: dict[str, list[str]] = {}
        for role, s in self.sets.items():
            enc = set_encoder(cfg, tokenizer, s)
            outputs = generate(model, enc, s.prompts, settings, raw=s.kind == "text")
            outputs_of[role] = outputs
            nll = target_nll(model, enc, s, e.batch_size) if s.has_targets else None
            x = SetScoring(set=s, outputs=outputs, settings=e, nll=nll, judge=self.judge, embedder=self.embedder,
                           similarity=self.embedder, original_outputs=self.original_outputs.get(role))
            for f in self.fast:
                if f.set != role:
                    continue
                for name in f.metrics:
                    if (role, name) in found:
                        continue
                    m = get_metric(name).compute(x)
                    if m is not None and m.value is not None:
                        found[(role, name)] = m.value
        return found, outputs_of

    def start(self, model: Any, tokenizer: Any) -> None:
        """The baseline: the fast metrics of the original model (the model before its first step)."""
        self.baseline, self.original_outputs = self.measure(model, tokenizer)

    def start_from_original(self, tokenizer: Any) -> None:
        """The baseline of a resumed run: the original model is loaded again for it."""
        import dataclasses

        from unlearn.models import load_model

        model, _ = load_model(dataclasses.replace(self.cfg.model, lora=None))
        try:
            self.start(model, tokenizer)
        finally:
            del model

    def __call__(self, model: Any, tokenizer: Any, step: int) -> dict[str, Any]:
        cfg, e = self.cfg, self.cfg.eval
        found, _ = self.measure(model, tokenizer)
        values: dict[str, Any] = {}
        for f in self.fast:
            # several metrics may share a key (leak rate, extraction leak rate): the one that applies
            v = next((found[(f.set, n)] for n in f.metrics if (f.set, n) in found), None)
            if v is not None:
                values[f.key] = round(v, 4)
        values["score"] = round(sum(w * values.get(k, 0.0) for k, w in e.trade_off.items()), 4)
        if self.baseline is not None:
            judged = verdict(self.table(found), e.verdict)
            values["collapsed"] = judged["collapsed"]
            if cfg.train.stop_when_forgotten:
                forgotten = judged["forgotten"]["met"] is True
                kept = judged["utility"]["met"] is not False
                values["forgotten"], values["utility_kept"] = forgotten, kept
                if forgotten and kept:
                    values["stop"] = (f"forgotten at step {step}: every forget rate <= {e.verdict.forget_target} "
                                      "with utility kept")
        return values

    def table(self, found: dict[tuple[str, str], Optional[float]]) -> dict[str, dict[str, Any]]:
        """The fast metrics as the report's metrics table (what unlearn.evaluate.verdict reads)."""
        base = self.baseline or {}
        table: dict[str, dict[str, Any]] = {}
        for (role, name), value in found.items():
            spec = get_metric(name)
            table.setdefault(role, {})[name] = {
                "unit": spec.unit, "unlearned": value, "original": base.get((role, name)),
                "higher_is_better": direction(name, self.cfg.eval.target_of(role)),
            }
        return table
