"""Teacher-forced NLL of evaluation: the fast paths are checked once per model, on a few rows of
the first batch, and the values equal the plain forward's."""

from __future__ import annotations

import torch

from unlearn.data.encode import Encoder
from unlearn.evaluate import nll as nll_mod
from unlearn.models.forward import ResponseLM

PAIRS = [(f"Question {i}: what is {i} plus {i}?", f"It is {2 * i}, of course." + " yes" * (i % 3)) for i in range(10)]


def plain_nll(model, encoded):
    """Mean NLL per response token of each example from a plain full forward, one row at a time."""
    out = []
    for e in encoded:
        with torch.no_grad():
            logits = model(torch.tensor([e.ids])).logits[0].float()
        lp = torch.log_softmax(logits, -1)
        vals = [-lp[t - 1, e.ids[t]].item() for t in range(e.n_prompt, len(e.ids))]
        out.append(sum(vals) / len(vals))
    return out


def test_checks_run_on_a_few_rows_and_the_nll_is_the_plain_forwards(tiny, monkeypatch):
    model, tok = tiny
    seen = []
    for name in ("check_fast_path", "check_packing"):
        real = getattr(ResponseLM, name)

        def spy(self, input_ids, *rest, _real=real, _name=name):
            seen.append((_name, input_ids.shape[0]))
            return _real(self, input_ids, *rest)

        monkeypatch.setattr(ResponseLM, name, spy)
    nll_mod._CHECKED.pop(model, None)
    encoded = Encoder(tok, "qa", 96).encode_many(PAIRS)
    got = nll_mod.response_nll(model, encoded, tok.pad_token_id, batch_size=8)
    # checked once each, on CHECK_ROWS rows of the first batch of 8, not on all 8 (nor again later)
    assert seen == [("check_fast_path", nll_mod.CHECK_ROWS), ("check_packing", nll_mod.CHECK_ROWS)]
    assert nll_mod._CHECKED[model] == {"fast": True, "pack": True}
    want = plain_nll(model, encoded)
    assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4
