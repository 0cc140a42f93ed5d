"""The baseline terms (npo, simnpo, idk, dpo, rmu) on hand-made logits, worked out by hand.

Same three rows as test_terms.py, vocabulary of 2:
  row 0: two response positions, policy p = (1/4, 3/4) then (1/2, 1/2), targets 1 then 0
  row 1: one position, p = (1/2, 1/2), target 1        row 2: one position, p = (1/4, 3/4), target 1
The reference is uniform everywhere, so log pi_ref = -ln 2 per token.
Sequence log-likelihoods: row 0: ln(3/4) + ln(1/2) = ln(3/8); row 1: ln(1/2).
log pi - log pi_ref: row 0: ln(3/8) - 2 ln(1/2) = ln(3/2); row 1: 0.
"""

import math

import pytest
import torch

from unlearn.data.batch import Batch
from unlearn.data.encode import IGNORE
from unlearn.errors import UnlearnError
from unlearn.objective import Objective, StepContext
from unlearn.objective.dpo import dpo
from unlearn.objective.idk import idk
from unlearn.objective.npo import npo
from unlearn.objective.rmu import random_direction, rmu
from unlearn.objective.simnpo import simnpo

LN3 = math.log(3.0)
I = IGNORE
LABELS = torch.tensor([[I, I, 1, 0], [I, I, I, 1], [I, I, 1, I]])
POLICY = torch.tensor([[0.0, LN3], [0.0, 0.0], [0.0, 0.0], [0.0, LN3]])
REFERENCE = torch.zeros(4, 2)
SELECT = LABELS[:, 1:] != I
ROWS = torch.arange(3).unsqueeze(1).expand_as(SELECT)[SELECT]  # row of each position: 0, 0, 1, 2
TARGETS = LABELS[:, 1:][SELECT]


def make_ctx(segments, ref_segments=(), logits=POLICY, hidden=None, ref_hidden=None):
    """A StepContext over the rows above; `hidden`/`ref_hidden`: {layer: [4 positions, H]}."""
    batch = Batch(torch.zeros_like(LABELS), torch.ones_like(LABELS), LABELS, segments)
    layers = tuple(sorted(hidden or {}))

    def policy(ids, mask, labels, hidden_layers=()):
        return (logits, TARGETS, ROWS, hidden) if hidden_layers else (logits, TARGETS, ROWS)

    def ref_fn(ids, mask, labels, hidden_layers=()):
        wanted = sorted({r for s in ref_segments for r in range(segments[s].start, segments[s].stop)})
        keep = torch.isin(ROWS, torch.tensor(wanted))
        out = (REFERENCE[keep], TARGETS[keep], ROWS[keep])
        if hidden_layers:
            out += ({k: v[keep] for k, v in ref_hidden.items()},)
        return out

    return StepContext(policy, batch, ref_fn, ref_segments, layers)


FORGET_01 = {"forget": slice(0, 2), "retain": slice(2, 3)}


def test_npo_matches_the_closed_form():
    # -(2/b) log sigmoid(-b d) = (2/b) log(1 + e^{b d}); d = ln(3/2) for row 0 and 0 for row 1
    b = 0.1
    expected = (2 / b) * (math.log(1 + 1.5**b) + math.log(2)) / 2  # 13.93869...
    assert npo(make_ctx(FORGET_01, ("forget",)), beta=b).item() == pytest.approx(expected, rel=1e-6)
    b = 1.0
    expected = 2 * (math.log(2.5) + math.log(2)) / 2  # log(1 + 1.5) + log 2 = 1.60944
    assert npo(make_ctx(FORGET_01, ("forget",)), beta=b).item() == pytest.approx(expected, rel=1e-6)


def test_npo_gradient_is_ga_weighted_by_two_sigmoid():
    # dL/d logp_i = (2/B) sigmoid(b d_i); row 1 (d = 0, B = 2) -> 0.5. Its position has
    # p = (1/2, 1/2), target 1: d logp / d logits = onehot - p = (-1/2, 1/2) -> grad (-0.25, 0.25):
    # descent lowers the target's logit, as gradient ascent on the forget response would.
    logits = POLICY.clone().requires_grad_(True)
    loss = npo(make_ctx(FORGET_01, ("forget",), logits=logits), beta=0.1)
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad[2].tolist() == pytest.approx([-0.25, 0.25], abs=1e-6)
    # row 0 is weighted 2 sigmoid(0.1 ln 1.5) / 2 = 1 / (1 + 1.5^-0.1); its first position has
    # target 1 and p = (1/4, 3/4): onehot - p = (-1/4, 1/4)
    w = 1 / (1 + 1.5**-0.1)
    assert grad[0].tolist() == pytest.approx([-w * 0.25, w * 0.25], abs=1e-6)


def test_npo_at_the_reference_is_two_ln2_over_beta():
    ctx = make_ctx(FORGET_01, ("forget",), logits=REFERENCE)
    assert npo(ctx, beta=0.5).item() == pytest.approx(4 * math.log(2), rel=1e-6)


def test_simnpo_is_length_normalised_and_reference_free():
    # mean NLL per token: row 0 (ln(4/3) + ln 2)/2 = ln(8/3)/2, row 1 ln 2
    # -(2/b) log sigmoid(b (nll - delta)) = (2/b) log(1 + e^{-b (nll - delta)})
    b = 2.5
    nll0, nll1 = math.log(8 / 3) / 2, math.log(2)
    expected = (2 / b) * (math.log(1 + math.exp(-b * nll0)) + math.log(1 + 2**-b)) / 2  # 0.16804...
    ctx = make_ctx(FORGET_01)  # no reference segments: SimNPO never asks for it
    assert simnpo(ctx, beta=b, delta=0.0).item() == pytest.approx(expected, rel=1e-6)
    # the margin: with delta = ln 2, row 1 sits exactly on it: log(1 + 1) = ln 2
    with_margin = (2 / b) * (math.log(1 + math.exp(-b * (nll0 - nll1))) + math.log(2)) / 2
    assert simnpo(make_ctx(FORGET_01), beta=b, delta=nll1).item() == pytest.approx(with_margin, rel=1e-6)


def test_idk_is_the_nll_of_the_refusal_rows():
    ctx = make_ctx({"forget": slice(2, 3), "refusal": slice(0, 2)})
    nll34, nll12 = -math.log(0.75), -math.log(0.5)
    assert idk(ctx).item() == pytest.approx(((nll34 + nll12) / 2 + nll12) / 2, rel=1e-6)  # 0.49473


def test_dpo_prefers_the_refusal_over_the_forget_response():
    # rejected = forget row 0: log-ratio ln(3/2); chosen = refusal row 1: log-ratio 0
    # -log sigmoid(b (0 - ln 1.5)) = log(1 + 1.5^b)
    segs = {"forget": slice(0, 1), "refusal": slice(1, 2), "retain": slice(2, 3)}
    ctx = make_ctx(segs, ("forget", "refusal"))
    assert dpo(ctx, beta=0.1).item() == pytest.approx(math.log(1 + 1.5**0.1), rel=1e-6)  # 0.71363
    # swapped roles: the chosen answer is the more likely one, the loss is below ln 2
    swapped = make_ctx({"forget": slice(1, 2), "refusal": slice(0, 1), "retain": slice(2, 3)}, ("forget", "refusal"))
    assert dpo(swapped, beta=0.1).item() == pytest.approx(math.log(1 + 1.5**-0.1), rel=1e-6)


def test_rmu_steers_forget_activations_and_anchors_retain_ones():
    c, alpha = 4.0, 100.0
    u = random_direction(2, seed=0)
    cu = c * u
    # forget positions 0, 1 (row 0) and 2 (row 1) sit at c*u plus (1, 0), (0, 0), (1, 1):
    # squared distances averaged over the 2 dims: 0.5, 0, 1 -> per row 0.25 and 1 -> mean 0.625.
    # retain position 3: policy (3, 1) vs reference (1, 1) -> (4 + 0) / 2 = 2, times alpha.
    hidden = torch.stack([cu + torch.tensor([1.0, 0.0]), cu, cu + torch.tensor([1.0, 1.0]), torch.tensor([3.0, 1.0])])
    ref_hidden = torch.tensor([[9.0, 9.0], [9.0, 9.0], [9.0, 9.0], [1.0, 1.0]])  # only row 2 is asked for
    ctx = make_ctx(FORGET_01, ("retain",), hidden={5: hidden}, ref_hidden={5: ref_hidden})
    v = rmu(ctx, steering=c, alpha=alpha, layer=5, train_layers=1, modules="mlp", seed=0)
    assert v.item() == pytest.approx(0.625 + alpha * 2.0, rel=1e-6)


def test_rmu_direction_is_a_fixed_nonnegative_unit_vector():
    u = random_direction(64, seed=3)
    assert u.norm().item() == pytest.approx(1.0, abs=1e-6) and bool((u >= 0).all())
    assert torch.equal(u, random_direction(64, seed=3))
    assert not torch.equal(u, random_direction(64, seed=4))


def test_terms_declare_what_they_read():
    assert Objective({"npo": 1.0}).reference_segments == ("forget",)
    assert Objective({"simnpo": 1.0}).needs_reference is False
    assert Objective({"idk": 1.0}).segments == ("refusal",)
    assert Objective({"dpo": 1.0}).reference_segments == ("forget", "refusal")
    rmu_obj = Objective({"rmu": 1.0})
    assert rmu_obj.segments == ("forget", "retain") and rmu_obj.reference_segments == ("retain",)
    with pytest.raises(UnlearnError, match=r"objective.npo: unknown parameter 'betta'; valid: weight, beta"):
        Objective({"npo": {"weight": 1.0, "betta": 0.1}})


def test_presets_name_the_baselines():
    from unlearn.objective.presets import PRESETS

    assert PRESETS["npo"] == {"npo": 1.0, "kl": 1.0}
    assert PRESETS["simnpo"] == {"simnpo": 1.0, "nll": 1.0}
    assert PRESETS["idk"] == {"idk": 1.0, "nll": 1.0}
    assert PRESETS["dpo"] == {"dpo": 1.0, "nll": 1.0}
    assert PRESETS["rmu"] == {"rmu": 1.0}
    for weights in PRESETS.values():
        Objective(weights)  # every preset names registered terms


# ---- on the tiny model: the hidden states rmu reads, the parameters it trains, refusal rows


def _tiny(lora=None):
    from unlearn.config import ModelConfig
    from unlearn.models import add_lora, load_model

    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    if lora is not None:
        model = add_lora(model, lora)
    return model, tok


def test_hidden_states_are_the_decoder_layer_outputs_at_response_positions(tiny):
    from unlearn.data import Encoder, Example, collate, encode_examples
    from unlearn.models import response_logits

    model, tok = tiny
    enc = Encoder(tok, "qa", 64)
    batch = collate({"forget": encode_examples(enc, [Example("Who?", "Me."), Example("Where is it?", "Here, now.")])},
                    tok.pad_token_id)
    captured = {}
    hook = model.model.layers[2].register_forward_hook(lambda m, a, out: captured.setdefault("h", out))
    try:
        with torch.no_grad():
            for fast in (True, False):
                captured.clear()
                logits, _, _, hidden = response_logits(model, batch.input_ids, batch.attention_mask, batch.labels, fast, hidden_layers=(2,))
                out = captured["h"][0] if isinstance(captured["h"], tuple) else captured["h"]
                select = batch.labels[:, 1:] != IGNORE
                assert torch.equal(hidden[2], out[:, :-1][select])
                assert hidden[2].shape == (logits.shape[0], model.config.hidden_size)
    finally:
        hook.remove()


def test_rmu_binds_a_layer_and_trains_only_its_mlps():
    model, _ = _tiny()
    model.requires_grad_(True)
    obj = Objective({"rmu": 1.0})  # layer null: 7 * 4 // 32 = layer 0 of the tiny model's 4
    obj.bind(model)
    assert obj.hidden_layers == (0,)
    obj.restrict_trainable(model)
    trained = sorted(n for n, p in model.named_parameters() if p.requires_grad)
    assert trained == [f"model.layers.0.mlp.{m}.weight" for m in ("down_proj", "gate_proj", "up_proj")]

    model, _ = _tiny()
    model.requires_grad_(True)
    obj = Objective({"rmu": {"weight": 1.0, "layer": -1, "train_layers": 2, "modules": "down_proj"}})
    obj.bind(model)
    assert obj.hidden_layers == (3,)
    obj.restrict_trainable(model)
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == [
        "model.layers.2.mlp.down_proj.weight", "model.layers.3.mlp.down_proj.weight"]
    assert obj.to_config() == {"rmu": {"weight": 1.0, "layer": -1, "train_layers": 2, "modules": "down_proj"}}


def test_rmu_mistakes_are_one_clear_line():
    from unlearn.config import LoraConfig

    model, _ = _tiny()
    with pytest.raises(UnlearnError, match=r"objective.rmu.layer: expected an integer in \[0, 4\)"):
        Objective({"rmu": {"weight": 1.0, "layer": 4}}).bind(model)
    with pytest.raises(UnlearnError, match=r"objective.rmu.layer: .* got 'x'"):
        Objective({"rmu": {"weight": 1.0, "layer": "x"}}).bind(model)
    lora_model, _ = _tiny(LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with pytest.raises(UnlearnError, match=r"no trainable parameter of layers 0..0 matches modules 'mlp\|fc1\|fc2'"):
        Objective({"rmu": 1.0}).bind(lora_model)


def test_refusal_rows_pair_each_forget_prompt_with_a_refusal(tiny):
    from unlearn.data import Encoder, Example, StepBatcher, encode_examples

    _, tok = tiny
    enc = Encoder(tok, "qa", 96)
    forget = [Example(f"Question {i}?", f"Secret {i}.") for i in range(5)]
    refusals = ["No.", "I cannot say.", "Ask someone else."]
    batcher = StepBatcher(enc, forget=encode_examples(enc, forget), forget_prompts=[e.prompt for e in forget],
                          refusals=refusals, segments=("forget", "refusal"), batch_size=3, seed=7)
    for index in range(4):
        idx = batcher.indices(index)
        assert len(idx["refusal"]) == len(idx["forget"]) == 3
        batch = batcher.batch(index)
        rows = batch.segments["refusal"]
        for j, f in enumerate(idx["forget"]):
            text = tok.decode(batch.input_ids[rows.start + j][batch.attention_mask[rows.start + j].bool()])
            assert f"Question {f}?" in text and refusals[idx["refusal"][j]] in text
        assert batcher.indices(index) == idx  # a pure function of (seed, index)
    draws = [r for i in range(20) for r in batcher.indices(i)["refusal"]]
    assert set(draws) == {0, 1, 2}


def test_a_term_parameter_can_be_set_from_the_command_line(tmp_path, data_files):
    from conftest import tiny_config, write_config
    from unlearn.config import load_config

    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, objective="npo"))
    cfg = load_config(path, ["objective.npo.beta=0.2"])
    assert cfg.objective == {"npo": {"weight": 1.0, "beta": 0.2}, "kl": 1.0}
    assert Objective(cfg.objective).terms[0].params == {"beta": 0.2}
