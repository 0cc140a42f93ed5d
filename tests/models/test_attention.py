"""Attention unit by unit over packed rows, and LoRA's update inside its matmul: the same numbers
as the dense masked attention and as peft's forward, on the paths that actually run."""

import json

import pytest
import torch
import torch.nn.functional as F

from unlearn.config import LoraConfig, ModelConfig
from unlearn.models import add_lora, load_model, pack, pack_rows, response_logits
from unlearn.models import attention as A

from tests.models.test_pack import uneven_batch


class _Heads(torch.nn.Module):
    num_key_value_groups = 2  # grouped-query attention: 4 query heads over 2 key/value heads


def _dense(q, k, v, mask):
    k, v = (t.repeat_interleave(2, dim=1) for t in (k, v))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)


@pytest.mark.parametrize("width", [None, 60], ids=["planned", "bins-of-60"])
def test_unit_attention_equals_the_dense_masked_attention(width):
    _, tok = load_model(ModelConfig(name="tiny-random-llama"))
    b = uneven_batch(tok)
    layout = pack_rows(b.input_ids, b.attention_mask, width=width, hidden_size=64)
    units = [u for bin_units in layout.units for u in bin_units]
    assert any(end > root_end for _, root_end, end, _ in units)  # rows sharing a prefix
    assert any(end == root_end for _, root_end, end, _ in units)  # rows alone
    if width is not None:
        assert len(layout.units) > 1 and any(u[-1][2] < layout.input_ids.shape[1] for u in layout.units)  # a padding tail
    bins, w = layout.input_ids.shape
    g = torch.Generator().manual_seed(0)
    q = torch.randn(bins, 4, w, 8, generator=g, requires_grad=True)
    k = torch.randn(bins, 2, w, 8, generator=g, requires_grad=True)
    v = torch.randn(bins, 2, w, 8, generator=g, requires_grad=True)
    out, _ = A.packed_attention_forward(_Heads(), q, k, v, layout.mask, **{A.UNITS_KWARG: layout.units})
    ref = _dense(q, k, v, layout.mask)
    real = torch.zeros(bins, w, dtype=torch.bool)  # positions that belong to a unit (not padding)
    for i, bin_units in enumerate(layout.units):
        real[i, : bin_units[-1][2]] = True
    assert out.shape == ref.shape
    assert torch.allclose(out[real], ref[real], atol=1e-6)
    assert torch.equal(out[~real], torch.zeros_like(out[~real]))
    weights = torch.randn(out.shape, generator=g) * real[:, :, None, None]
    grads = torch.autograd.grad((out * weights).sum(), (q, k, v))
    expected = torch.autograd.grad((ref * weights).sum(), (q, k, v))
    for a, e in zip(grads, expected):
        assert torch.allclose(a, e, atol=1e-6)


def test_without_units_it_is_transformers_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 4, 9, 8, generator=g), torch.randn(2, 2, 9, 8, generator=g), torch.randn(2, 2, 9, 8, generator=g)
    mask = torch.ones(2, 1, 9, 9, dtype=torch.bool).tril()
    mask[1, :, :, 6:] = False
    mask[1, :, 6:, 6] = True
    ours, _ = A.packed_attention_forward(_Heads(), q, k, v, mask)
    theirs, _ = sdpa_attention_forward(_Heads(), q, k, v, mask)
    assert torch.equal(ours, theirs)


def test_packed_forward_runs_unit_by_unit_and_leaves_the_rest_alone(tmp_path, monkeypatch):
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    model.eval()
    b = uneven_batch(tok)
    prompt = tok("hello there", return_tensors="pt")
    before = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    seen = []
    real = A.packed_attention_forward

    def spy(*args, **kwargs):
        seen.append(kwargs.get(A.UNITS_KWARG))
        return real(*args, **kwargs)

    from transformers import AttentionInterface

    A.use_packed_attention(model)
    monkeypatch.setitem(AttentionInterface._global_mapping, A.PACKED_ATTENTION, spy)
    plain, _, _ = response_logits(model, b.input_ids, b.attention_mask, b.labels, True, pack=False)
    assert seen and all(u is None for u in seen)  # unpacked: the plain SDPA path
    seen.clear()
    packed, _, _ = response_logits(model, b.input_ids, b.attention_mask, b.labels, True, pack=True)
    assert model.config._attn_implementation == A.PACKED_ATTENTION
    assert len(seen) == model.config.num_hidden_layers and all(u is not None for u in seen)
    assert torch.allclose(plain, packed, atol=1e-5)
    # generation after the switch: the same tokens as with transformers' SDPA
    assert torch.equal(model.generate(**prompt, max_new_tokens=8, do_sample=False), before)
    # a saved model does not carry the switch
    model.save_pretrained(tmp_path)
    assert A.PACKED_ATTENTION not in json.dumps(json.loads((tmp_path / "config.json").read_text()))


def test_rows_sharing_a_prompt_pack_into_one_bin_without_padding():
    """With attention unit by unit, a bin's width costs nothing in attention: a step's rows go into
    one bin exactly as wide as the tokens it computes (before, two of four benchmark steps ran four
    bins of 128 for about 450 tokens)."""
    _, tok = load_model(ModelConfig(name="tiny-random-llama"))
    b = uneven_batch(tok)
    layout = pack_rows(b.input_ids, b.attention_mask, hidden_size=576)
    assert layout.input_ids.shape[0] == 1
    assert layout.units[0][-1][2] == layout.input_ids.shape[1]  # no padding
    dense = layout.input_ids.shape[1] ** 2
    assert layout.cost < pack.layout_cost(1, layout.input_ids.shape[1], 576, dense)


def _lora_model(dropout=0.0):
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    model = add_lora(model, LoraConfig(r=4, alpha=8, dropout=dropout))
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(2))
    return model, tok


def test_fused_lora_forward_equals_peft_forward():
    from peft.tuners.lora.layer import Linear as LoraLinear

    model, tok = _lora_model()
    layers = [m for m in model.modules() if type(m) is LoraLinear]
    assert layers and all("forward" in m.__dict__ for m in layers)  # add_lora gave each the fused forward
    b = uneven_batch(tok)

    def run():
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits
        model.zero_grad()
        logits.square().mean().backward()
        return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    fused = run()
    for m in layers:
        del m.forward  # peft's own
    plain = run()
    assert torch.allclose(fused[0], plain[0], atol=1e-6)
    assert fused[1].keys() == plain[1].keys() and len(fused[1]) == 2 * len(layers)
    for n, g in plain[1].items():
        assert torch.allclose(fused[1][n], g, atol=1e-6, rtol=1e-5), n


def test_fused_lora_forward_leaves_other_cases_to_peft(monkeypatch):
    model, tok = _lora_model()
    layer = next(m for m in model.modules() if "forward" in m.__dict__)
    calls = []
    real = type(layer).forward
    monkeypatch.setattr(type(layer), "forward", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    x = torch.randn(3, layer.in_features)
    layer(x)
    assert not calls  # the plain case: fused
    with model.disable_adapter():
        assert torch.equal(layer(x), layer.base_layer(x))
    assert len(calls) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        layer(x)
    assert len(calls) == 2
    layer.base_layer.to(torch.bfloat16)  # a half-precision base under float32 adapters (peft's default)
    layer(x.to(torch.bfloat16))
    assert len(calls) == 3


def test_fused_lora_keeps_dropout_on_the_branch():
    model, _ = _lora_model(dropout=0.5)
    layer = next(m for m in model.modules() if "forward" in m.__dict__)
    layer.train()
    x = torch.randn(64, layer.in_features)
    torch.manual_seed(0)
    fused = layer(x)
    torch.manual_seed(0)
    plain = type(layer).forward(layer, x)  # peft's own
    assert torch.allclose(fused, plain, atol=1e-6)
    assert not torch.allclose(fused, layer.base_layer(x))  # the branch is there


def test_masked_grouped_query_attention_on_the_cpu_copies_no_keys_and_equals_transformers_sdpa(monkeypatch):
    """A padded batch's forward (generation's prefill, the unpacked NLL) over grouped-query heads:
    transformers' SDPA copies keys and values once per query head (repeat_kv) whenever a mask is
    given; ours runs SDPA's own grouped-query attention, to the same values and gradients."""
    import transformers.integrations.sdpa_attention as S

    g = torch.Generator().manual_seed(2)
    q = torch.randn(3, 4, 7, 8, generator=g, requires_grad=True)
    k = torch.randn(3, 2, 11, 8, generator=g, requires_grad=True)  # 4 cached positions, then the 7 new ones
    v = torch.randn(3, 2, 11, 8, generator=g, requires_grad=True)
    mask = torch.ones(3, 1, 7, 11, dtype=torch.bool)
    mask[..., 4:] = torch.ones(7, 7, dtype=torch.bool).tril()
    mask[1, ..., :2] = False  # left padding of one row
    theirs, _ = S.sdpa_attention_forward(_Heads(), q, k, v, mask)
    copies = []
    real_repeat = S.repeat_kv
    monkeypatch.setattr(S, "repeat_kv", lambda t, n: copies.append(n) or real_repeat(t, n))
    ours, _ = A.packed_attention_forward(_Heads(), q, k, v, mask)
    assert copies == []
    assert torch.equal(ours, theirs)
    w = torch.randn(theirs.shape, generator=g)
    for a, e in zip(torch.autograd.grad((ours * w).sum(), (q, k, v)), torch.autograd.grad((theirs * w).sum(), (q, k, v))):
        assert torch.allclose(a, e, atol=1e-6)
    # one query position (a decoding step) stays transformers' own path, which packs the query heads
    one, _ = A.packed_attention_forward(_Heads(), q[:, :, -1:], k, v, mask[:, :, -1:])
    assert torch.equal(one, S.sdpa_attention_forward(_Heads(), q[:, :, -1:], k, v, mask[:, :, -1:])[0])
