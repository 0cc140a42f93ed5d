"""Generation (left padding, stops, the training template) and perplexity by hand on a tiny model."""

import math

import pytest
import torch

from unlearn.data import Encoder
from unlearn.evaluate.generate import (
    GenerationSettings,
    cut_at_stop,
    end_of_turn_ids,
    generate,
    prompt_ids,
    stop_strings,
)
from unlearn.evaluate.run import output_nll

PROMPTS = ["What is up?", "Where does Elena Marsh live, tell me now please?", "x"]


def test_batched_left_padded_generation_equals_one_at_a_time(tiny):
    model, tok = tiny
    enc = Encoder(tok, "qa", 96)
    batched = generate(model, enc, PROMPTS, GenerationSettings(max_new_tokens=6, batch_size=3))
    single = [generate(model, enc, [p], GenerationSettings(max_new_tokens=6, batch_size=1))[0] for p in PROMPTS]
    assert batched == single


def test_prompts_are_tokenized_as_in_training(tiny):
    _, tok = tiny
    for template in ("qa", "chat", "Q: {prompt}\nA: {response}"):
        enc = Encoder(tok, template, 96)
        e = enc.encode("Where is it?", "Here.")
        assert prompt_ids(enc, ["Where is it?"], 96)[0] == e.ids[: e.n_prompt]


def test_stops_for_each_template(tiny):
    _, tok = tiny
    qa, chat = Encoder(tok, "qa", 96), Encoder(tok, "chat", 96)
    assert stop_strings(qa) == ["### Question:"] and stop_strings(chat) == []
    assert cut_at_stop(" Paris.\n### Question: next", ["### Question:"]) == " Paris.\n"
    assert end_of_turn_ids(qa) == [tok.eos_token_id]
    assert end_of_turn_ids(chat) == sorted({tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")})


class FixedLogits(torch.nn.Module):
    """A 'model' whose next-token distribution is the same at every position."""

    def __init__(self, logits):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.tensor(logits, dtype=torch.float32))

    def forward(self, input_ids, attention_mask=None, **kw):
        out = self.logits.expand(*input_ids.shape, -1)
        return type("Out", (), {"logits": out})()


def test_perplexity_by_hand_on_a_tiny_model(tiny):
    _, tok = tiny
    enc = Encoder(tok, "qa", 96, add_eos=False)
    v = len(tok)
    # uniform logits: every token has probability 1/V, so the perplexity is exactly V
    nll = output_nll(FixedLogits([0.0] * v), enc, ["q", "q", "q"], ["hello there", "", "ab"], 2)
    assert nll[1] is None  # empty output: flagged, not scored
    assert math.exp(nll[0]) == pytest.approx(v, rel=1e-5) and math.exp(nll[2]) == pytest.approx(v, rel=1e-5)
    # one favoured token: "a" has probability e^2 / (e^2 + V - 1); the response " ab" is three byte
    # tokens (space, a, b), of which one is "a"
    a = tok.convert_tokens_to_ids("a")
    logits = [0.0] * v
    logits[a] = 2.0
    z = math.exp(2.0) + v - 1
    expected = math.exp(-(math.log(math.exp(2.0) / z) + 2 * math.log(1 / z)) / 3)
    (value,) = output_nll(FixedLogits(logits), enc, ["q"], ["ab"], 1)
    assert enc.encode("q", "ab").ids[enc.encode("q", "ab").n_prompt:] == tok(" ab", add_special_tokens=False)["input_ids"]
    assert math.exp(value) == pytest.approx(expected, rel=1e-5)
