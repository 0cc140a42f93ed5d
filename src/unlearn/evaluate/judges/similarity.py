"""The similarity judge: embedding cosine to any forget response >= eval.similarity_threshold, i.e.
the output still says (a paraphrase of) what was to be forgotten. Uses the evaluation's embedder."""

from __future__ import annotations

from typing import Any

from unlearn.errors import UnlearnError
from unlearn.evaluate.judges.registry import Judge, register_judge


class SimilarityJudge:
    name = "similarity"

    def __init__(self, embedder: Any, threshold: float):
        self.embedder, self.threshold = embedder, threshold

    def __call__(self, prompts, outputs, references):
        refs = [r for r in references if r and r.strip()]
        if not refs:
            raise UnlearnError("eval.judge: similarity needs the set's responses; this set has none")
        sims = self.embedder.max_similarity(outputs, refs)
        return [s >= self.threshold for s in sims]


@register_judge("similarity", needs=("embedder",))
def _similarity(arg: str, cfg: Any, device: str, embedder: Any = None) -> Judge:
    if embedder is None:
        from unlearn.evaluate.embed import Embedder

        embedder = Embedder(cfg.embedding_model, device)
    return SimilarityJudge(embedder, cfg.similarity_threshold)
