"""The quantisation attack: round-to-nearest on hand-worked numbers, the mechanism of Zhang et al.
(ICLR 2025: small unlearning updates round away), and which layers of a model it touches."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from unlearn.auditing.quantize import (
    bitsandbytes_available,
    block_linears,
    load_bitsandbytes,
    quantize_model,
    rtn_quantize,
)
from unlearn.config import ModelConfig
from unlearn.errors import UnlearnError
from unlearn.models import load_model


def test_a_row_on_the_grid_is_exact():
    # 2 bits: qmax 3, scale (3 - 0) / 3 = 1, zero 0: every value is a grid point.
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.equal(rtn_quantize(w, bits=2), w)


def test_hand_worked_rounding():
    # scale = (1.0 - 0) / 3 = 1/3, zero = 0; w / scale = [0, 0.3, 0.6, 3] -> q = [0, 0, 1, 3]
    # -> w' = q / 3 = [0, 0, 1/3, 1].
    w = torch.tensor([[0.0, 0.1, 0.2, 1.0]])
    assert torch.allclose(rtn_quantize(w, bits=2), torch.tensor([[0.0, 0.0, 1 / 3, 1.0]]), atol=1e-7)


def test_negative_minimum_and_zero_point():
    # min -1, max 2, 2 bits: scale 1, zero = round(1) = 1; w / scale = [-1, -0.4, 0.6, 2]
    # -> q = round(.) + 1 = [0, 1, 2, 3] -> w' = (q - 1) * 1 = [-1, 0, 1, 2].
    w = torch.tensor([[-1.0, -0.4, 0.6, 2.0]])
    assert torch.equal(rtn_quantize(w, bits=2), torch.tensor([[-1.0, 0.0, 1.0, 2.0]]))


def test_all_positive_group_keeps_its_ends():
    # min 0.5, max 1.0, 2 bits: scale 1/6, zero = round(-3) = -3 (outside 0..3: nothing clamps it);
    # 0.75 / scale = 4.5 -> round half to even 4 -> q = 1 -> w' = (1 + 3) / 6 = 2/3.
    w = torch.tensor([[0.5, 0.75, 1.0]])
    assert torch.allclose(rtn_quantize(w, bits=2), torch.tensor([[0.5, 2 / 3, 1.0]]), atol=1e-6)


def test_constant_group_stays_exact_and_shape_dtype_kept():
    w = torch.full((3, 5), 0.37, dtype=torch.bfloat16)
    out = rtn_quantize(w, bits=4, group_size=2)
    assert out.dtype == torch.bfloat16 and out.shape == w.shape and torch.equal(out, w)


def test_each_group_has_its_own_scale():
    # Two groups of 4 (2 bits): [0, 0.1, 0.2, 1.0] as above; [0, 10, 20, 30] has scale 10 (exact).
    w = torch.tensor([[0.0, 0.1, 0.2, 1.0, 0.0, 10.0, 20.0, 30.0]])
    out = rtn_quantize(w, bits=2, group_size=4)
    assert torch.allclose(out, torch.tensor([[0.0, 0.0, 1 / 3, 1.0, 0.0, 10.0, 20.0, 30.0]]), atol=1e-6)
    # One group of 8 instead: scale 10, and the small values all round to 0.
    one = rtn_quantize(w, bits=2, group_size=8)
    assert torch.allclose(one, torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 10.0, 20.0, 30.0]]), atol=1e-6)


def test_a_shorter_last_group():
    # group_size 4 over 6 columns: [0, 1, 2, 3] exact; the last group [0, 0.4] alone has
    # scale 0.4 / 3 and keeps both ends, where one group of 6 (scale 1) would round 0.4 to 0.
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0, 0.4]])
    assert torch.allclose(rtn_quantize(w, bits=2, group_size=4), w, atol=1e-7)
    assert torch.allclose(rtn_quantize(w, bits=2, group_size=6), torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0, 0.0]]))


def test_small_updates_round_away():
    """The paper's mechanism: an unlearning update smaller than half a quantisation step, which
    leaves each group's min and max in place, is invisible after quantisation."""
    g = torch.Generator().manual_seed(0)
    rows, cols, group = 8, 64, 16
    step = 0.01
    # w on the 4-bit grid of each group: integers 0..15 times the step, each group spanning 0..15.
    q = torch.randint(0, 16, (rows, cols), generator=g)
    q[:, ::group], q[:, 1::group] = 0, 15
    w = (q - 7).float() * step
    delta = (torch.rand(rows, cols, generator=g) - 0.5) * 0.9 * step  # |delta| < step / 2
    delta[(q == 0) | (q == 15)] = 0  # each group's ends stay: so do its scale and zero point
    base = rtn_quantize(w, bits=4, group_size=group)
    assert torch.allclose(base, w, atol=1e-6)
    assert torch.equal(rtn_quantize(w + delta, bits=4, group_size=group), base)
    assert (w + delta != w).float().mean() > 0.7  # most weights did change (not the ends)
    # A delta of more than half a step is not rounded away.
    assert not torch.equal(rtn_quantize(w + 3 * delta, bits=4, group_size=group), base)


def test_eight_bits_err_far_less_than_four():
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(1))
    err8 = (rtn_quantize(w, 8) - w).abs().mean()
    err4 = (rtn_quantize(w, 4) - w).abs().mean()
    # Step sizes differ by (2**8 - 1) / (2**4 - 1) = 17; the mean error scales with the step.
    assert 10 < err4 / err8 < 25


@pytest.mark.parametrize("bits, group", [(0, 128), (17, 128), (4, 0)])
def test_bad_settings(bits, group):
    with pytest.raises(UnlearnError):
        rtn_quantize(torch.ones(2, 4), bits, group)


def test_quantize_model_touches_block_linears_only():
    model, _ = load_model(ModelConfig(name="tiny-random-llama"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    n = quantize_model(model, bits=4, group_size=32)
    # 4 decoder layers x (q, k, v, o, gate, up, down)
    assert n == 4 * 7
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    linears = {f"{name}.weight" for name, _ in block_linears(model)}
    assert changed == linears and len(linears) == 28
    assert all(".layers." in k and "proj" in k for k in changed)
    assert torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    assert torch.equal(before["model.embed_tokens.weight"], after["model.embed_tokens.weight"])
    # What was written is the rounded weight, at most half a step away from the original.
    w0, w1 = before["model.layers.0.mlp.up_proj.weight"], after["model.layers.0.mlp.up_proj.weight"]  # 64 inputs: 2 groups a row
    assert torch.equal(w1, rtn_quantize(w0, 4, 32))
    for row_new, row_old in zip(w1.reshape(-1, 32), w0.reshape(-1, 32)):
        assert row_new.unique().numel() <= 16  # 4 bits: at most 16 levels per group
        step = (row_old.max() - row_old.min()) / 15
        assert (row_new - row_old).abs().max() <= step / 2 + 1e-6


def test_quantize_model_keeps_the_dtype():
    model, _ = load_model(ModelConfig(name="tiny-random-llama", dtype="bfloat16"))
    quantize_model(model, bits=8)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_tied_head_stays_full_precision():
    """SmolLM2 ties lm_head to the embeddings; neither is a block Linear, and a block Linear that
    shares the embedding's weight is left out as well."""
    class Block(nn.Module):
        def __init__(self, emb):
            super().__init__()
            self.proj = nn.Linear(4, 4)
            self.tied = nn.Linear(3, 4, bias=False)
            self.tied.weight = emb.weight

    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(4, 3)
            self.layers = nn.ModuleList([Block(self.emb)])

        def get_input_embeddings(self):
            return self.emb

    toy = Toy()
    emb = toy.emb.weight.clone()
    assert quantize_model(toy, bits=2) == 1
    assert torch.equal(toy.emb.weight, emb)


def test_a_model_without_block_linears_is_refused():
    toy = nn.Sequential(nn.Linear(4, 4), nn.ReLU())  # a Linear, but in no block list
    with pytest.raises(UnlearnError, match="Sequential has no torch.nn.Linear"):
        quantize_model(toy, bits=4)
    with pytest.raises(UnlearnError, match="Embedding has no"):
        quantize_model(nn.Embedding(4, 4), bits=4)


def test_a_peft_model_is_refused():
    from unlearn.config import LoraConfig
    from unlearn.models import add_lora

    model, _ = load_model(ModelConfig(name="tiny-random-llama"))
    peft = add_lora(model, LoraConfig(r=2))
    with pytest.raises(UnlearnError, match="merge"):
        quantize_model(peft, bits=4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when there is no GPU")
def test_bitsandbytes_without_gpu_is_one_line(tmp_path):
    assert not bitsandbytes_available()
    with pytest.raises(UnlearnError) as err:
        load_bitsandbytes(tmp_path, 4)
    assert "\n" not in str(err.value) and ("CUDA GPU" in str(err.value) or "bitsandbytes" in str(err.value))
    with pytest.raises(UnlearnError, match="bits 4"):
        load_bitsandbytes(tmp_path, 3)


@pytest.mark.skipif(not bitsandbytes_available(), reason="needs a CUDA GPU and bitsandbytes")
def test_bitsandbytes_loads_the_tiny_model_in_4_bits(tmp_path):
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    model.save_pretrained(tmp_path, safe_serialization=True)
    q = load_bitsandbytes(tmp_path, 4, tokenizer=tok, dtype=torch.float16)
    kinds = {type(m).__name__ for m in q.modules()}
    assert "Linear4bit" in kinds
    ids = torch.tensor([tok("hello").input_ids], device="cuda")
    with torch.no_grad():
        assert torch.isfinite(q(input_ids=ids).logits).all()
