"""One loaded model as a benchmark sees it: the likelihood of given answers, token statistics for
membership inference, and generation, each in the config's prompt template or on raw text.

Every call is batched the way the evaluation's are (unlearn.evaluate.nll: packed rows, the output
head at response positions only; unlearn.evaluate.generate: sorted, left-padded, KV cache).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from unlearn.config import Config
from unlearn.data.encode import Encoder
from unlearn.evaluate.generate import generate
from unlearn.evaluate.nll import response_batches

RAW = "{prompt}{response}"


@dataclass
class AnswerScore:
    """log p(answer | prompt) summed over the answer's tokens, and their number."""

    logp: float
    tokens: int

    @property
    def mean_nll(self) -> float:
        """Mean NLL per answer token (nats): open-unlearning's avg_loss."""
        return -self.logp / max(self.tokens, 1)


class ModelProbe:
    """`model` (loaded, on its device) with the run's tokenizer and settings. label: "original",
    "unlearned" or a reference model's label; name: where it was loaded from."""

    def __init__(self, model: Any, tokenizer: Any, cfg: Config, label: str, name: str):
        self.model, self.tokenizer, self.cfg, self.label, self.name = model, tokenizer, cfg, label, name
        self.batch_size = cfg.eval.batch_size

    def encoder(self, raw: bool = False, add_eos: bool = False, max_length: int | None = None) -> Encoder:
        """The training template (data.template), or plain concatenation with raw=True. No EOS by
        default: a benchmark scores the answer's own tokens, as open-unlearning does. max_length:
        tokens kept per row (None: data.max_length), for benchmarks that score at the model's context."""
        return Encoder(self.tokenizer, RAW if raw else self.cfg.data.template,
                       max_length or self.cfg.data.max_length, add_eos)

    @torch.no_grad()
    def answer_scores(self, prompts: Sequence[str], answers: Sequence[str], *, raw: bool = False,
                      max_length: int | None = None) -> list[AnswerScore]:
        """Teacher-forced log p(answer | prompt) of each pair, in input order (rows longer than
        max_length, default data.max_length, lose the start of their prompt)."""
        if len(prompts) != len(answers):
            raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
        enc = self.encoder(raw, max_length=max_length).encode_many(list(zip(prompts, answers)))
        out: list[AnswerScore] = []
        for n, logits, targets, rows in response_batches(self.model, enc, self.tokenizer.pad_token_id, self.batch_size):
            lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            sums = torch.zeros(n, device=lp.device).index_add(0, rows, lp)
            counts = torch.zeros(n, device=lp.device).index_add(0, rows, torch.ones_like(lp))
            out.extend(AnswerScore(float(s), int(c)) for s, c in zip(sums.tolist(), counts.tolist()))
        return out

    def token_stats(self, prompts: Sequence[str], answers: Sequence[str], *, raw: bool = False) -> list[Any]:
        """Per-token log-probabilities with Min-K%++'s mean and deviation (unlearn.auditing.membership)."""
        from unlearn.auditing.membership import token_stats

        enc = self.encoder(raw).encode_many(list(zip(prompts, answers)))
        return token_stats(self.model, enc, self.tokenizer.pad_token_id, self.batch_size)

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int | None = None, raw: bool = False) -> list[str]:
        """Greedy (or eval's decoding) outputs; raw: continuations of the text as written."""
        from unlearn.evaluate.run import settings_of

        settings = settings_of(self.cfg)
        if max_new_tokens is not None:
            settings = dataclasses.replace(settings, max_new_tokens=max_new_tokens)
        return generate(self.model, self.encoder(raw), prompts, settings, raw=raw)
