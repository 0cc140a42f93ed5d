"""The fused step on a real (tiny) model: same numbers as separate forwards; every term trains."""

import copy

import pytest
import torch

from conftest import FORGET, RETAIN
from unlearn.config import LoraConfig, ModelConfig
from unlearn.data import Encoder, Example, StepBatcher, collate, encode_examples
from unlearn.data.refusals import REFUSALS
from unlearn.models import Reference, ResponseLM, add_lora, load_model, response_logits
from unlearn.objective import Objective, StepContext, available_terms


def make_batcher(tokenizer, segments=("forget", "mismatch", "retain"), batch_size=2, k=2):
    enc = Encoder(tokenizer, "qa", 96)
    forget = [Example(p, r) for p, r in FORGET]
    retain = [Example(p, r) for p, r in RETAIN]
    return StepBatcher(
        enc, forget=encode_examples(enc, forget), forget_prompts=[e.prompt for e in forget],
        retain=encode_examples(enc, retain), mismatch_pool=[e.response for e in retain],
        refusals=REFUSALS, segments=segments, batch_size=batch_size, k=k, seed=0,
    )


def fresh(lora=False, name="tiny-random-llama"):
    model, tok = load_model(ModelConfig(name=name))
    if lora:
        model = add_lora(model, LoraConfig(r=4, alpha=8))
    return model, tok


@pytest.mark.parametrize("name", ["tiny-random-llama", "tiny-random-opt"])
def test_fast_path_matches_full_forward(name):
    model, tok = fresh(name=name)
    model.eval()
    batch = make_batcher(tok).batch(0)
    lm = ResponseLM(model)
    assert lm.check_fast_path(batch.input_ids, batch.attention_mask, batch.labels)
    fast = response_logits(model, batch.input_ids, batch.attention_mask, batch.labels, True)[0]
    full = response_logits(model, batch.input_ids, batch.attention_mask, batch.labels, False)[0]
    assert torch.allclose(fast, full, atol=1e-5)


@pytest.mark.parametrize("lora", [False, True])
def test_fused_forward_equals_separate_forwards(lora):
    """One forward over forget+mismatch+retain gives the per-term losses of one forward per segment."""
    model, tok = fresh(lora)
    model.eval()
    ref = Reference.build(model)
    objective = Objective({"ga": 0.5, "mismatch": 1.0, "kl": 1.0, "nll": 1.0})
    batcher = make_batcher(tok)
    for index in range(3):
        batch = batcher.batch(index)

        def ref_fn(ids, mask, labels):
            with ref.model() as m:
                return response_logits(m, ids, mask, labels, True)

        fused = objective(StepContext(ResponseLM(model), batch, ref_fn, objective.reference_segments))[1]

        # Separately: each segment in its own batch with its own padding, full-vocabulary forward.
        separate = {}
        for term, seg in (("ga", "forget"), ("mismatch", "mismatch"), ("kl", "retain"), ("nll", "retain")):
            rows = batch.segments[seg]
            width = int(batch.attention_mask[rows].sum(1).max())
            sub = type(batch)(
                batch.input_ids[rows, :width], batch.attention_mask[rows, :width],
                batch.labels[rows, :width], {seg: slice(0, rows.stop - rows.start)},
            )

            def full(ids, mask, labels):
                return response_logits(model, ids, mask, labels, False)

            def ref_full(ids, mask, labels):
                with ref.model() as m:
                    return response_logits(m, ids, mask, labels, False)

            sep_obj = Objective({term: 1.0})
            separate[term] = sep_obj(StepContext(full, sub, ref_full, sep_obj.reference_segments))[1][term]
        for term in separate:
            assert fused[term].item() == pytest.approx(separate[term].item(), abs=1e-5), term


def test_padding_tokens_change_nothing():
    model, tok = fresh()
    model.eval()
    batch = make_batcher(tok).batch(0)
    obj = Objective({"ga": 1.0, "mismatch": 1.0, "nll": 1.0})
    before = obj(StepContext(ResponseLM(model), batch))[0]
    garbage = batch.input_ids.clone()
    garbage[batch.attention_mask == 0] = 42
    after = obj(StepContext(ResponseLM(model), type(batch)(garbage, batch.attention_mask, batch.labels, batch.segments)))[0]
    assert before.item() == pytest.approx(after.item(), abs=1e-6)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("term", sorted(available_terms()))
def test_every_term_trains(term, lora):
    """Each registered term alone: finite loss, trainable parameters move, LoRA leaves base weights."""
    model, tok = fresh(lora)
    model.train()
    objective = Objective({term: 1.0})
    objective.bind(model)  # as the train loop does: terms may pick layers and restrict what trains
    objective.restrict_trainable(model)
    batcher = make_batcher(tok, segments=objective.segments)
    ref = Reference.build(model) if objective.needs_reference else None

    def ref_fn(ids, mask, labels, hidden_layers=()):
        with ref.model() as m:
            return response_logits(m, ids, mask, labels, True, hidden_layers=hidden_layers)

    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in range(2):  # two steps: LoRA's B starts at zero, so A moves from step 2
        ctx = StepContext(
            ResponseLM(model), batcher.batch(step), ref_fn if ref else None, objective.reference_segments,
            objective.hidden_layers,
        )
        loss, _ = objective(ctx)
        assert torch.isfinite(loss), loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    params = dict(model.named_parameters())
    moved = [n for n, before in trainable.items() if not torch.equal(before, params[n])]
    assert len(moved) >= 0.5 * len(trainable), f"{term}: only {len(moved)}/{len(trainable)} moved"
    if lora:
        assert frozen and all(torch.equal(v, params[n]) for n, v in frozen.items())
        assert all("lora_" in n for n in trainable)


def test_lora_reference_is_the_base_model_without_a_copy():
    base, tok = fresh()
    original = copy.deepcopy(base)
    model = add_lora(base, LoraConfig(r=4, alpha=8))
    with torch.no_grad():  # make the adapter do something
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.fill_(0.1)
    batch = make_batcher(tok).batch(0)
    ref = Reference.build(model)
    assert ref.copy is None
    with torch.no_grad(), ref.model() as m:
        ref_logits = response_logits(m, batch.input_ids, batch.attention_mask, batch.labels, True)[0]
    orig_logits = response_logits(original, batch.input_ids, batch.attention_mask, batch.labels, True)[0]
    policy_logits = response_logits(model, batch.input_ids, batch.attention_mask, batch.labels, True)[0]
    assert torch.allclose(ref_logits, orig_logits, atol=1e-5)
    assert not torch.allclose(policy_logits, orig_logits, atol=1e-3)


def test_full_reference_is_a_frozen_copy_in_compute_dtype():
    model, _ = fresh()
    ref = Reference.build(model, torch.bfloat16)
    assert ref.copy is not model
    assert all(p.dtype == torch.bfloat16 and not p.requires_grad for p in ref.copy.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert Reference.build(model).copy.dtype == torch.float32  # no autocast: the model's own dtype


def with_dropout(name, p=0.1):
    """The tiny model of `name`, same weights, rebuilt from a config with dropout p (as OPT ships)."""
    model, tok = fresh(name=name)
    cfg = copy.deepcopy(model.config)
    cfg.attention_dropout = p
    if hasattr(cfg, "dropout"):
        cfg.dropout = p  # OPT: hidden-state dropout too
    noisy = type(model)(cfg)
    noisy.load_state_dict(model.state_dict())
    return noisy, tok


@pytest.mark.parametrize("name", ["tiny-random-llama", "tiny-random-opt"])
@pytest.mark.parametrize("keep", [False, True], ids=["default", "keep_dropout"])
def test_policy_dropout_is_off_by_default_so_step_zero_matches_the_reference(name, keep):
    """With the model's dropout off (the default), the policy equals the frozen reference at step 0:
    KL 0 and NPO's log-ratio 0. train.keep_dropout: true keeps it on, and then they differ."""
    from unlearn.config import TrainConfig
    from unlearn.distributed import new_accelerator
    from unlearn.train import prepare_policy
    from unlearn.train.step import forward_objective

    torch.manual_seed(0)
    model, tok = with_dropout(name)
    model.requires_grad_(True)
    objective = Objective({"kl": 1.0, "npo": 1.0})
    batcher = make_batcher(tok, segments=objective.segments)
    train = TrainConfig(lr=1e-5, batch_size=2, keep_dropout=keep)
    parts, _ = prepare_policy(new_accelerator("no", cpu=True), model, objective, batcher, train)
    assert parts.inner.model.training  # still in training mode (gradient checkpointing needs it)
    ctx, _, values = forward_objective(parts, batcher.batch(0))
    log_ratio = ctx.seq_logp("forget") - ctx.reference_seq_logp("forget")
    if keep:
        assert values["kl"].item() > 1e-5 and log_ratio.abs().max().item() > 1e-3
    else:
        assert values["kl"].item() == pytest.approx(0.0, abs=1e-6)
        assert log_ratio.abs().max().item() == pytest.approx(0.0, abs=1e-4)
    # the saved model keeps its own config
    assert parts.inner.model.config.attention_dropout == 0.1


def test_disable_dropout_zeroes_the_models_dropout_but_not_loras():
    from unlearn.models import disable_dropout

    model, _ = with_dropout("tiny-random-opt")
    model = add_lora(model, LoraConfig(r=4, alpha=8, dropout=0.2))
    assert disable_dropout(model) > 0
    lora = [m.p for n, m in model.named_modules() if "lora_dropout." in n]
    assert lora and all(p == 0.2 for p in lora)
    rest = [(n, a, v) for n, m in model.named_modules() if "lora_dropout" not in n
            for a, v in vars(m).items() if (a.endswith("dropout") or a == "layerdrop") and isinstance(v, float)]
    assert rest and all(v == 0.0 for _, _, v in rest), rest
    assert all(m.p == 0.0 for n, m in model.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" not in n)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 1e3], ids=["under", "near", "over"])
def test_clip_gradients_equals_torch_and_skips_the_multiply_that_changes_nothing(scale, monkeypatch):
    from accelerate import Accelerator

    from unlearn.distributed import clip_gradients

    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (5, 7, 3)]
    grads = [torch.randn(p.shape, generator=g) for p in params]
    total = torch.linalg.vector_norm(torch.cat(grads))
    grads = [x * scale / total for x in grads]  # norm `scale` (1.0: at max_norm; torch multiplies by 1 - 1e-6)
    theirs = [p.detach().clone().requires_grad_() for p in params]
    for p, t, x in zip(params, theirs, grads):
        p.grad, t.grad = x.clone(), x.clone()
    expected = float(torch.nn.utils.clip_grad_norm_(theirs, 1.0))
    multiplied = []
    real = torch.nn.utils.clip_grads_with_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grads_with_norm_", lambda *a, **k: multiplied.append(1) or real(*a, **k))
    norm = clip_gradients(Accelerator(cpu=True), params, 1.0)
    assert norm == pytest.approx(expected, rel=1e-6)
    for p, t in zip(params, theirs):
        assert torch.equal(p.grad, t.grad)
    assert bool(multiplied) == (scale >= 1.0)  # under the limit: no pass over the gradients
