"""The reserved KV cache: each decoding step writes in place, and attention sees what it saw before."""

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer, DynamicSlidingWindowLayer

from unlearn.data import Encoder
from unlearn.evaluate.decode import GenerationSettings, Part, decode
from unlearn.evaluate.generate import prompt_ids
from unlearn.evaluate.kvcache import ReservedLayer, reserve


def kv(rows=3, length=5, heads=2, dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, heads, length, dim, generator=g), torch.randn(rows, heads, length, dim, generator=g)


def prefilled(layers=2, **shape):
    cache = DynamicCache()
    for i in range(layers):
        cache.update(*kv(seed=i, **shape), layer_idx=i)
    return cache


def test_a_reserved_layer_holds_what_a_dynamic_layer_holds_through_every_operation():
    plain, mine = prefilled(), prefilled()
    assert reserve(mine, room=3)
    assert all(type(x) is ReservedLayer for x in mine.layers)

    def same():
        for a, b in zip(plain.layers, mine.layers):
            assert torch.equal(a.keys, b.keys) and torch.equal(a.values, b.values)
            assert a.get_seq_length() == b.get_seq_length()
        assert plain.get_seq_length() == mine.get_seq_length()

    same()
    for step in range(5):  # past the room of 3: the buffers grow
        for i in range(2):
            new = kv(length=1, seed=10 + step * 2 + i)
            out_a, out_b = plain.update(*new, layer_idx=i), mine.update(*new, layer_idx=i)
            assert all(torch.equal(x, y) for x, y in zip(out_a, out_b))
        same()
    index = torch.tensor([2, 0])
    plain.batch_select_indices(index), mine.batch_select_indices(index)
    same()
    plain.batch_repeat_interleave(2), mine.batch_repeat_interleave(2)
    same()
    plain.crop(-2), mine.crop(-2)
    same()
    new = kv(rows=4, length=1, seed=99)
    assert all(torch.equal(x, y) for x, y in zip(plain.update(*new, layer_idx=0), mine.update(*new, layer_idx=0)))
    mine.reset()
    assert all(type(x) is DynamicLayer and not x.is_initialized for x in mine.layers)


def test_a_step_within_the_room_writes_in_place():
    cache = prefilled(layers=1)
    reserve(cache, room=4)
    layer = cache.layers[0]
    where = layer.keys.untyped_storage().data_ptr()
    for s in range(4):
        keys, _ = cache.update(*kv(length=1, seed=s), layer_idx=0)
        assert keys.untyped_storage().data_ptr() == where


def test_only_a_cache_of_plain_filled_layers_is_changed():
    assert not reserve(DynamicCache(), room=4)  # no layers yet
    sliding = prefilled(layers=1)
    sliding.layers.append(DynamicSlidingWindowLayer(sliding_window=8))
    sliding.layers[1].update(*kv())
    assert not reserve(sliding, room=4)
    assert [type(x) for x in sliding.layers] == [DynamicLayer, DynamicSlidingWindowLayer]
    assert not reserve(object(), room=4)


def test_decoding_writes_the_cache_in_place_and_gives_transformers_greedy_tokens(varied):
    """Every decoding step's keys lie in the same memory (DynamicCache made a new tensor each
    step), and the tokens are transformers' greedy generate's."""
    model, tok = varied
    enc = Encoder(tok, "qa", 96)
    ids = prompt_ids(enc, ["What is up?", "Where does Elena Marsh live, tell me now please?", "x"], 96)
    width = max(map(len, ids))
    input_ids = torch.tensor([[tok.pad_token_id] * (width - len(r)) + r for r in ids])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in ids])
    seen = []

    def record(module, args, kwargs, output):
        if kwargs["input_ids"].shape[1] == 1:  # a decoding step, not the prefill
            seen.append(output.past_key_values.layers[0].keys.untyped_storage().data_ptr())

    hook = model.register_forward_hook(record, with_kwargs=True)
    try:
        got = decode(model, [Part(input_ids, mask)], GenerationSettings(max_new_tokens=8))
    finally:
        hook.remove()
    assert len(seen) == 7 and len(set(seen)) == 1
    out = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                         top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
    assert got == [r[width:].tolist() for r in out]
    assert len({tuple(r) for r in got}) == len(got)  # the prompts matter: the comparison can fail
