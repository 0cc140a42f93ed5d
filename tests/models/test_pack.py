"""Packing short rows together and chunking the vocabulary-sized work change no number."""

import pytest
import torch

from unlearn.config import LoraConfig, ModelConfig
from unlearn.data import Encoded, collate
from unlearn.models import Reference, ResponseLM, add_lora, forward, load_model, pack, pack_rows, response_logits
from unlearn.objective import Objective, StepContext


def test_pack_rows_layout_by_hand():
    # Rows of 5, 2, 3 and 1 tokens, right-padded to 5. First-fit decreasing into bins of 5:
    #   row 0 (5) -> bin 0;  row 2 (3) -> bin 1 at 0;  row 1 (2) -> bin 1 at 3;  row 3 (1) -> bin 2 at 0
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    ids = torch.tensor([[10, 11, 12, 13, 14], [20, 21, 0, 0, 0], [30, 31, 32, 0, 0], [40, 0, 0, 0, 0]])
    p = pack_rows(ids, mask, width=5)
    assert p.input_ids[:, :5].tolist()[:2] == [[10, 11, 12, 13, 14], [30, 31, 32, 20, 21]]
    assert p.input_ids[2, 0].item() == 40
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1], [0, 0, 1, 2, 3]]
    assert p.index[1, :2].tolist() == [8, 9] and p.index[2, :3].tolist() == [5, 6, 7] and p.index[3, 0] == 10
    m = p.mask[1, 0].int().tolist()  # bin 1: row 2 at 0..2, row 1 at 3..4, each causal, no crossing
    assert m == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0], [0, 0, 0, 1, 1]]
    m = p.mask[2, 0].int().tolist()  # bin 2: row 3 alone, then the padding tail on its own
    assert m[0] == [1, 0, 0, 0, 0] and m[1] == [0, 1, 0, 0, 0] and m[4] == [0, 1, 1, 1, 1]


def test_shared_prefix_layout_by_hand(monkeypatch):
    # Rows A = 1 2 3 4 5, B = 1 2 3 9 (shares A's first three tokens), C = 7 8. One bin:
    #   slots: 1 2 3 4 5 | 9 | 7 8    positions 0 1 2 3 4 | 3 | 0 1
    # B's own token (slot 5, position 3) sees A's first three tokens and itself, not A's 4 and 5.
    monkeypatch.setattr(pack, "MIN_SHARED_PREFIX", 2)
    ids = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 9, 0], [7, 8, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    p = pack_rows(ids, mask, hidden_size=1)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 9, 7, 8]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 4, 3, 0, 1]]
    assert p.index[0].tolist() == [0, 1, 2, 3, 4] and p.index[1, :4].tolist() == [0, 1, 2, 5]
    assert p.index[2, :2].tolist() == [6, 7]
    m = p.mask[0, 0].int().tolist()
    assert m[4] == [1, 1, 1, 1, 1, 0, 0, 0]
    assert m[5] == [1, 1, 1, 0, 0, 1, 0, 0]
    assert m[7] == [0, 0, 0, 0, 0, 0, 1, 1]
    # without sharing nothing is saved here: three rows, the plain layout's cost
    assert pack_rows(ids, mask, hidden_size=1, share_prefix=False).input_ids.numel() >= 11


def test_rows_that_share_only_a_template_head_do_not_join_one_wide_unit():
    # 32 questions, each asked three times with a different 5-token answer: every row starts with
    # the same 8 template tokens, then 10 tokens of its own question. Before unit sizes were limited,
    # all 96 rows joined one unit through the template head (1,428 tokens, its attention dense over
    # 1,428 x 1,428), which cost more than sharing nothing, so nothing was shared: 96 rows of 23.
    # Now each question's three rows form their own unit (18 + 3 x 5 = 33 tokens).
    g = torch.Generator().manual_seed(0)
    head = list(range(1, 9))
    rows = []
    for q in range(32):
        question = torch.randint(20, 250, (10,), generator=g).tolist()
        rows += [head + question + torch.randint(20, 250, (5,), generator=g).tolist() for _ in range(3)]
    ids, mask = torch.tensor(rows), torch.ones(96, 23, dtype=torch.long)
    p = pack_rows(ids, mask, hidden_size=576)
    assert p.input_ids.shape[1] <= 4 * 33  # narrow bins, not one wide one
    assert p.input_ids.numel() - 32 * 33 < 33 * p.input_ids.shape[0]  # each bin's tail under a unit
    for q in range(32):  # a question's three rows compute its 18 prompt tokens once
        a, b, c = (p.index[3 * q + k, :18].tolist() for k in range(3))
        assert a == b == c
    one_unit = pack_rows(ids, mask, width=1428, hidden_size=576)  # the old layout: every row in one unit
    assert one_unit.input_ids.shape == (1, 1428) and p.cost < one_unit.cost / 2
    assert p.cost < pack_rows(ids, mask, hidden_size=576, share_prefix=False).cost / 2


def uneven_batch(tokenizer, seed=0):
    """Two forget rows, three mismatch rows starting with each forget row's prompt, two retain rows."""
    g = torch.Generator().manual_seed(seed)

    def rnd(n):
        return torch.randint(5, 250, (n,), generator=g).tolist()

    p1, p2 = rnd(12), rnd(9)
    forget = [Encoded(p1 + rnd(30), 12), Encoded(p2 + rnd(25), 9)]
    mismatch = [Encoded(p1 + rnd(n), 12) for n in (4, 7, 2)] + [Encoded(p2 + rnd(n), 9) for n in (5, 3, 1)]
    retain = [Encoded(rnd(15), 8), Encoded(rnd(11), 6)]
    return collate({"forget": forget, "mismatch": mismatch, "retain": retain}, tokenizer.pad_token_id)


@pytest.mark.parametrize("name", ["tiny-random-llama", "tiny-random-opt"])
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "full"])
def test_packed_logits_equal_unpacked(name, fast):
    model, tok = load_model(ModelConfig(name=name))
    model.eval()
    b = uneven_batch(tok)
    layout = pack_rows(b.input_ids, b.attention_mask, hidden_size=model.config.hidden_size)
    assert layout.input_ids.numel() < int(b.attention_mask.sum())  # fewer positions than real tokens
    plain, t1, r1 = response_logits(model, b.input_ids, b.attention_mask, b.labels, fast, pack=False)
    packed, t2, r2 = response_logits(model, b.input_ids, b.attention_mask, b.labels, fast, pack=True)
    assert torch.equal(t1, t2) and torch.equal(r1, r2)
    assert torch.allclose(plain, packed, atol=1e-5)
    assert ResponseLM(model).check_packing(b.input_ids, b.attention_mask, b.labels)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_packed_step_has_the_same_losses_and_gradients(lora):
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    if lora:
        model = add_lora(model, LoraConfig(r=4, alpha=8))
        with torch.no_grad():  # a non-zero adapter, so its gradients are not trivially equal
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))
    model.train()
    ref = Reference.build(model)
    objective = Objective({"ga": 0.5, "mismatch": 1.0, "kl": 1.0, "nll": 1.0})
    b = uneven_batch(tok, seed=3)
    out = {}
    for pack in (False, True):
        lm = ResponseLM(model)
        lm.pack = pack

        def ref_fn(ids, mask, labels, pack=pack):
            with ref.model() as m:
                return response_logits(m, ids, mask, labels, True, pack)

        loss, values = objective(StepContext(lm, b, ref_fn, objective.reference_segments))
        model.zero_grad()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        out[pack] = (values, grads)
    for term in out[False][0]:
        assert out[True][0][term].item() == pytest.approx(out[False][0][term].item(), abs=1e-5), term
    assert out[True][1].keys() == out[False][1].keys()
    for n, g in out[False][1].items():
        assert torch.allclose(out[True][1][n], g, atol=1e-5, rtol=1e-4), n


def test_check_packing_catches_a_model_that_ignores_the_mask(monkeypatch):
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    b = uneven_batch(tok)
    decoder = model.get_decoder()
    original = decoder.forward

    def no_mask(*args, attention_mask=None, position_ids=None, **kwargs):
        return original(*args, **kwargs)  # as a model that derives everything from the ids would

    monkeypatch.setattr(decoder, "forward", no_mask)
    lm = ResponseLM(model)
    assert not lm.check_packing(b.input_ids, b.attention_mask, b.labels)
    assert lm.pack is False


def test_check_packing_refuses_other_attention_implementations():
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    model.config._attn_implementation = "eager"
    b = uneven_batch(tok)
    assert not ResponseLM(model).check_packing(b.input_ids, b.attention_mask, b.labels)


def test_chunked_vocabulary_work_equals_one_chunk(monkeypatch):
    """token log-probs, forward KL and reference log-probs in chunks of 7 positions: same values
    and same gradients as in one piece."""
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    model.train()
    ref = Reference.build(model)
    b = uneven_batch(tok, seed=5)
    vocab = model.config.vocab_size

    def ref_fn(ids, mask, labels):
        with ref.model() as m:
            return response_logits(m, ids, mask, labels, True)

    def run(chunk_positions):
        monkeypatch.setattr(forward, "CHUNK_ELEMENTS", chunk_positions * vocab)
        ctx = StepContext(ResponseLM(model), b, ref_fn, ("retain",))
        values = [ctx.token_logps("forget"), ctx.forward_kl("retain"), ctx.reference_token_logps("retain")]
        model.zero_grad()
        (values[0].sum() + values[1].sum()).backward()
        return values, {n: p.grad.clone() for n, p in model.named_parameters()}

    one, g_one = run(10**6)
    many, g_many = run(7)
    assert one[0].shape[0] > 7 and one[1].shape[0] > 7  # really more than one chunk
    for a, c in zip(one, many):
        assert torch.allclose(a, c, atol=1e-6)
    for n in g_one:
        assert torch.allclose(g_one[n], g_many[n], atol=1e-6), n


def deep_bf16_llama(tok, *, init_std: float):
    """A tiny Llama, 32 layers deep, in bfloat16: deep enough that rounding alone moves its logits
    between layouts by several per cent of the largest (as a random-init Llama-2-7B shape does)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=32, num_attention_heads=4,
                      num_key_value_heads=4, vocab_size=len(tok), max_position_embeddings=256,
                      initializer_range=init_std, pad_token_id=tok.pad_token_id)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(torch.bfloat16).eval()


def test_check_packing_accepts_bf16_rounding_and_still_catches_a_broken_layout(monkeypatch):
    """In bf16, a deep model's packed logits differ from the padded batch's by more than 3 % of the
    largest logit (7.4 % here), as the rows run one by one do (10 %): rounding, not a wrong layout. The
    check used to refuse packing there (on the H200, the Llama-2-7B-shaped LoRA step ran unpacked);
    it now compares with what the layout alone changes. A model that ignores the mask still fails."""
    _, tok = load_model(ModelConfig(name="tiny-random-llama"))
    model = deep_bf16_llama(tok, init_std=0.2)
    b = uneven_batch(tok)
    plain, _, _ = response_logits(model, b.input_ids, b.attention_mask, b.labels, True, pack=False)
    packed, _, _ = response_logits(model, b.input_ids, b.attention_mask, b.labels, True, pack=True)
    assert (packed.float() - plain.float()).abs().max() > 0.03 * plain.float().abs().max()  # the old rule's refusal
    lm = ResponseLM(model)
    assert lm.check_packing(b.input_ids, b.attention_mask, b.labels) and lm.pack

    decoder = model.get_decoder()
    original = decoder.forward
    monkeypatch.setattr(decoder, "forward",
                        lambda *a, attention_mask=None, position_ids=None, **k: original(*a, **k))
    assert not lm.check_packing(b.input_ids, b.attention_mask, b.labels) and not lm.pack
