"""The hallucination rate follows bert-score's conventions and counts empty outputs apart (issue 14,
item 8). bert-score is optional: a stand-in package records what BertScorer asks of it."""

import json
import sys
import types

import pytest

from unlearn.errors import UnlearnError
from unlearn.evaluate.metrics import SetScoring, get_metric, hallucination_rate
from unlearn.evaluate.sets import EvalItem, EvalSet


@pytest.fixture
def fake_bert_score(tmp_path, monkeypatch):
    """A `bert_score` package with bert-score's layer table (part of it), one English baseline file
    (roberta-large) where bert-score keeps them, and a BERTScorer that records its arguments."""
    pkg = tmp_path / "bert_score"
    (pkg / "rescale_baseline" / "en").mkdir(parents=True)
    (pkg / "rescale_baseline" / "en" / "roberta-large.tsv").write_text("LAYER,P,R,F\n0,0.8,0.8,0.8\n")
    module = types.ModuleType("bert_score")
    module.__file__ = str(pkg / "__init__.py")
    module.__path__ = [str(pkg)]
    utils = types.ModuleType("bert_score.utils")
    utils.model2layers = {"roberta-large": 17, "bert-base-uncased": 9, "distilbert-base-uncased": 5}
    made = []

    class BERTScorer:
        def __init__(self, **kwargs):
            made.append(kwargs)

        def score(self, cands, refs, verbose=False):
            import torch

            f = torch.tensor([1.0 if c == r else 0.5 for c, r in zip(cands, refs)])
            return f, f, f

    module.BERTScorer = BERTScorer
    module.utils = utils
    monkeypatch.setitem(sys.modules, "bert_score", module)
    monkeypatch.setitem(sys.modules, "bert_score.utils", utils)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "bert_score" else real(name, *a))
    return made, pkg


def _folder(tmp_path, name, **config):
    folder = tmp_path / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_a_local_roberta_large_uses_bert_scores_layer_and_baseline(fake_bert_score, tmp_path):
    from unlearn.evaluate.embed import BertScorer

    made, pkg = fake_bert_score
    folder = _folder(tmp_path / "models", "roberta-large", model_type="roberta", num_hidden_layers=24)
    scorer = BertScorer(str(folder))
    kw = made[-1]
    assert kw["num_layers"] == 17  # bert-score's layer for roberta-large, not the last (24)
    assert kw["rescale_with_baseline"] is True and kw["lang"] == "en"
    assert kw["baseline_path"] == str(pkg / "rescale_baseline" / "en" / "roberta-large.tsv")
    assert scorer.settings == {"model": str(folder), "layer": 17, "rescaled_with_baseline": True}


def test_a_folder_whose_config_names_a_known_model_and_hub_ids_with_an_owner(fake_bert_score, tmp_path):
    from unlearn.evaluate.embed import BertScorer

    made, _ = fake_bert_score
    folder = _folder(tmp_path, "my-scorer", _name_or_path="bert-base-uncased", num_hidden_layers=12)
    BertScorer(str(folder))
    assert made[-1]["num_layers"] == 9 and made[-1]["rescale_with_baseline"] is False  # no baseline file
    BertScorer("FacebookAI/roberta-large")
    assert made[-1]["num_layers"] == 17 and made[-1]["rescale_with_baseline"] is True


def test_an_unknown_model_needs_eval_bertscore_layer(fake_bert_score, tmp_path):
    from unlearn.evaluate.embed import BertScorer

    made, _ = fake_bert_score
    folder = _folder(tmp_path, "mystery", num_hidden_layers=6)
    with pytest.raises(UnlearnError) as e:
        BertScorer(str(folder))
    assert "\n" not in str(e.value) and "eval.bertscore_layer" in str(e.value) and "mystery" in str(e.value)
    BertScorer(str(folder), layer=4)
    assert made[-1]["num_layers"] == 4
    BertScorer("roberta-large", layer=20)  # the config key wins over the table
    assert made[-1]["num_layers"] == 20


def test_bertscore_layer_is_checked(tmp_path, data_files):
    from conftest import tiny_config, write_config
    from unlearn.config import load_config

    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files))
    assert load_config(path).eval.bertscore_layer is None
    with pytest.raises(UnlearnError, match="eval.bertscore_layer: must be >= 1"):
        load_config(path, ["eval.bertscore_layer=0"])


class Similar:
    """A stand-in similarity: 0.9 to the hallucinated answer, 0.5 to the right one; remembers its inputs."""

    def __init__(self):
        self.seen = []

    def pairwise(self, a, b):
        self.seen.extend(a)
        return [0.9 if "fake" in y else 0.5 for y in b]


def test_empty_outputs_are_counted_apart_not_as_not_hallucinated():
    items = [EvalItem(f"Q{i}", "right", hallucinated="fake", where=f"f line {i}") for i in range(4)]
    s = EvalSet("forget", "f", items=items)
    sim = Similar()
    settings = type("E", (), {"hallucination_margin": 0.1})()
    m = get_metric("hallucination_rate").compute(
        SetScoring(set=s, outputs=["a", "  ", "", "b"], settings=settings, similarity=sim))
    assert m.per_example == [1.0, None, None, 1.0] and m.value == 1.0
    assert m.extra["empty"] == 2 and m.extra["empty_rate"] == 0.5
    assert "" not in sim.seen and "  " not in sim.seen  # empty outputs are never scored
    assert hallucination_rate([0.9, None], [0.5, None]).extra["empty"] == 1


def test_an_unknown_bertscore_model_fails_before_generation_naming_the_line(fake_bert_score, tmp_path, data_files):
    from conftest import tiny_config, write_config, write_jsonl
    from unlearn.config import load_config
    from unlearn.evaluate.run import prepare

    halu = write_jsonl(tmp_path / "halu.jsonl", [{"prompt": "Q?", "response": "right", "fake": "wrong"}])
    folder = _folder(tmp_path, "mystery", num_hidden_layers=6)
    cfg = tiny_config(tmp_path, data_files, eval={
        "sets": ["forget"], "hallucination_similarity": "bertscore", "bertscore_model": str(folder),
        "forget": {"path": str(halu), "hallucinated_field": "fake"}})
    path = write_config(tmp_path / "c.yaml", cfg)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "bertscore_model" in t)
    with pytest.raises(UnlearnError) as e:
        prepare(load_config(path), "cpu")
    assert str(e.value).startswith(f"{path} line {line}: eval.bertscore_layer: bert-score has no layer")
    _, similarity = prepare(load_config(path, ["eval.bertscore_layer=3"]), "cpu")[3:]
    assert similarity.settings == {"model": str(folder), "layer": 3, "rescaled_with_baseline": False}
