"""UNDIAL, SatImp, WGA, CE-U and PDU: hand-worked values, gradient directions, agreement with
open-unlearning's formulas (re-expressed here from locuslab/open-unlearning, src/trainer/utils.py and
src/trainer/unlearn/{ceu,pdu}.py), and one training step of each preset on the tiny model.

The hand-worked rows (vocabulary of 2, as in test_terms.py):
  row 0: two response positions, policy p = (1/4, 3/4) then (1/2, 1/2), targets 1 then 0
  row 1: one position, p = (1/2, 1/2), target 1        row 2: one position, p = (1/4, 3/4), target 1
Forget = rows 0 and 1, retain = row 2 unless a test says otherwise.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unlearn.data.batch import Batch
from unlearn.data.encode import IGNORE
from unlearn.errors import UnlearnError
from unlearn.objective import Objective, StepContext, register_term
from unlearn.objective.ceu import ceu
from unlearn.objective.ga import ga
from unlearn.objective.pdu import DualState, dual_update
from unlearn.objective.presets import PRESETS, preset_weights
from unlearn.objective.satimp import satimp
from unlearn.objective.undial import undial
from unlearn.objective.wga import wga

LN2, LN3 = math.log(2.0), math.log(3.0)
I = IGNORE
LABELS = torch.tensor([[I, I, 1, 0], [I, I, I, 1], [I, I, 1, I]])
FG_RT = {"forget": slice(0, 2), "retain": slice(2, 3)}
NEW = ["undial", "satimp", "wga", "ceu", "pdu"]


def ctx_from_full(logits, labels, segments, reference=None, ref_segments=()):
    """A StepContext over full [rows, T, V] logits, as the fused forward gives them: the positions
    whose next label is not IGNORE, row by row."""
    select = labels[:, 1:] != IGNORE
    rows = torch.arange(labels.shape[0]).unsqueeze(1).expand_as(select)[select]
    targets = labels[:, 1:][select]
    batch = Batch(torch.zeros_like(labels), torch.ones_like(labels), labels, segments)

    def policy(ids, mask, lab):
        return logits[:, :-1][select], targets, rows

    def ref_fn(ids, mask, lab):
        wanted = sorted({r for s in ref_segments for r in range(segments[s].start, segments[s].stop)})
        keep = torch.isin(rows, torch.tensor(wanted))
        return reference[:, :-1][select][keep], targets[keep], rows[keep]

    return StepContext(policy, batch, ref_fn if reference is not None else None, ref_segments)


def hand_logits(requires_grad=False):
    """Full logits whose response positions hold [0, ln3], [0, 0], [0, 0], [0, ln3] (rows 0, 0, 1, 2)."""
    full = torch.zeros(3, 4, 2)
    full[0, 1] = torch.tensor([0.0, LN3])  # row 0, first response position
    full[2, 1] = torch.tensor([0.0, LN3])  # row 2
    return full.requires_grad_(requires_grad)


def hand_ctx(segments=FG_RT, logits=None, reference=None, ref_segments=()):
    return ctx_from_full(hand_logits() if logits is None else logits, LABELS, segments, reference, ref_segments)


# ---- WGA -----------------------------------------------------------------------------------------


def test_wga_weights_each_token_by_its_probability():
    # w log p per token: row 0: (3/4) ln(3/4) = -0.215762, (1/2) ln(1/2) = -0.346574 -> mean -0.281168
    #                    row 1: (1/2) ln(1/2) = -0.346574;  over the batch: -0.313871
    expected = (((0.75 * math.log(0.75)) + 0.5 * math.log(0.5)) / 2 + 0.5 * math.log(0.5)) / 2
    assert wga(hand_ctx(), beta=1.0).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(-0.313871, abs=1e-6)
    assert wga(hand_ctx(), beta=0.0).item() == pytest.approx(ga(hand_ctx()).item(), abs=1e-7)  # beta 0: GA


def test_wga_gradient_is_ga_scaled_by_the_token_probability():
    grads = {}
    for name, fn in (("wga", lambda c: wga(c, beta=1.0)), ("ga", ga)):
        full = hand_logits(requires_grad=True)
        (grads[name],) = torch.autograd.grad(fn(hand_ctx(logits=full)), full)
    # row 1's position (full[1, 2]): p = (1/2, 1/2), target 1, weight 1/2, batch of 2:
    # (1/2)(1/2)(onehot - p) = (-1/8, 1/8): descent lowers the forget token's logit
    assert grads["wga"][1, 2].tolist() == pytest.approx([-0.125, 0.125], abs=1e-6)
    # each position: GA's gradient times p(target): 3/4 at row 0's first, 1/2 at the others
    assert torch.allclose(grads["wga"][0, 1], 0.75 * grads["ga"][0, 1], atol=1e-7)
    assert torch.allclose(grads["wga"][0, 2], 0.5 * grads["ga"][0, 2], atol=1e-7)


# ---- SatImp --------------------------------------------------------------------------------------


def test_satimp_weights_are_saturation_times_importance():
    # w = p^5 (1 - p): p = 3/4 -> 0.059326, p = 1/2 -> 1/64
    # row 0: (0.059326 ln(3/4) + ln(1/2) / 64) / 2 = -0.013949; row 1: ln(1/2) / 64 = -0.010830
    w = lambda p: p**5 * (1 - p)  # noqa: E731
    expected = ((w(0.75) * math.log(0.75) + w(0.5) * math.log(0.5)) / 2 + w(0.5) * math.log(0.5)) / 2
    assert expected == pytest.approx(-0.0123896, abs=1e-6)
    assert satimp(hand_ctx(), beta1=5.0, beta2=1.0).item() == pytest.approx(expected, abs=1e-7)
    # beta2 = 0 leaves the saturation weight alone: WGA; both 0: GA
    assert satimp(hand_ctx(), beta1=1.0, beta2=0.0).item() == pytest.approx(wga(hand_ctx(), beta=1.0).item(), abs=1e-7)
    assert satimp(hand_ctx(), beta1=0.0, beta2=0.0).item() == pytest.approx(ga(hand_ctx()).item(), abs=1e-7)


def test_satimp_spares_tokens_the_model_is_sure_of():
    # a forget token at p = 0.999 weighs less than one at p = 5/6, where p^5 (1-p) peaks
    full = torch.zeros(3, 4, 2)
    full[1, 2] = torch.tensor([0.0, math.log(999.0)])  # row 1: p(target) = 0.999
    full[0, 1] = torch.tensor([0.0, math.log(5.0)])  # row 0, first: p(target) = 5/6
    full.requires_grad_(True)
    (g,) = torch.autograd.grad(satimp(hand_ctx(logits=full), beta1=5.0, beta2=1.0), full)
    assert g[1, 2, 1] > 0 and g[0, 1, 1] > 0  # descent lowers both forget tokens' logits
    assert g[1, 2, 1] < 0.05 * g[0, 1, 1]


# ---- UNDIAL --------------------------------------------------------------------------------------


def test_undial_distils_the_reference_with_the_forget_token_lowered():
    # reference uniform, beta = ln 3: target q = (target 1/4, other 3/4)
    # row 0: first position target 1, q = (3/4, 1/4), p = (1/4, 3/4): -(3/4 ln(1/4) + 1/4 ln(3/4)) = 1.111641
    #        second target 0, q = (1/4, 3/4), p = (1/2, 1/2): ln 2      -> row mean 0.902394
    # row 1: ln 2;   over the batch: 0.797771
    ref = torch.zeros(3, 4, 2)
    v = undial(hand_ctx(reference=ref, ref_segments=("forget",)), beta=LN3)
    first = -(0.75 * math.log(0.25) + 0.25 * math.log(0.75))
    assert v.item() == pytest.approx(((first + LN2) / 2 + LN2) / 2, abs=1e-6)
    assert v.item() == pytest.approx(0.797771, abs=1e-6)


def test_undial_gradient_lowers_the_forget_token_at_the_start():
    # policy = reference (uniform), beta = ln 3: gradient on the logits p - q = (1/2 - 3/4, 1/2 - 1/4)
    # for a target-1 position; row 1 weighs 1/2 in the batch: (-1/8, 1/8)
    full = torch.zeros(3, 4, 2, requires_grad=True)
    (g,) = torch.autograd.grad(undial(hand_ctx(logits=full, reference=torch.zeros(3, 4, 2), ref_segments=("forget",)), beta=LN3), full)
    assert g[1, 2].tolist() == pytest.approx([-0.125, 0.125], abs=1e-6)
    # beta = 0: the target is the reference itself, already matched: no gradient
    (g0,) = torch.autograd.grad(undial(hand_ctx(logits=full, reference=torch.zeros(3, 4, 2), ref_segments=("forget",)), beta=0.0), full)
    assert g0.abs().max().item() == pytest.approx(0.0, abs=1e-7)


# ---- CE-U ----------------------------------------------------------------------------------------


def test_ceu_is_the_cross_entropy_to_the_distribution_without_the_true_token():
    # vocabulary of 2: q = the other token, CE = -ln p(other)
    # row 0: -ln(1/4) = ln 4, -ln(1/2) = ln 2 -> 1.5 ln 2;  row 1: ln 2;  over the batch 1.25 ln 2
    assert ceu(hand_ctx(), skip_first=0).item() == pytest.approx(1.25 * LN2, abs=1e-6)
    # skip_first 1: row 0 keeps its second token (ln 2); row 1 keeps none and does not count
    assert ceu(hand_ctx(), skip_first=1).item() == pytest.approx(LN2, abs=1e-6)
    # skip_first 2: nothing left: 0, with a gradient of zeros rather than NaN
    full = hand_logits(requires_grad=True)
    v = ceu(hand_ctx(logits=full), skip_first=2)
    (g,) = torch.autograd.grad(v, full)
    assert v.item() == 0.0 and bool(torch.isfinite(g).all()) and g.abs().max().item() == 0.0


def test_ceu_renormalises_the_other_tokens_and_pushes_the_true_one_down():
    # one position, p = (1/8, 2/8, 5/8), target 2: q = (1/3, 2/3, 0)
    # CE = -(1/3 ln(1/8) + 2/3 ln(1/4)) = ln 2 + (4/3) ln 2 = (7/3) ln 2 = 1.617343
    labels = torch.tensor([[I, 2]])
    full = torch.log(torch.tensor([[[1.0, 2.0, 5.0], [1.0, 1.0, 1.0]]])).requires_grad_(True)
    v = ceu(ctx_from_full(full, labels, {"forget": slice(0, 1)}), skip_first=0)
    assert v.item() == pytest.approx(7 / 3 * LN2, abs=1e-6)
    (g,) = torch.autograd.grad(v, full)
    # gradient p - q: (1/8 - 1/3, 1/4 - 2/3, 5/8): the true token's logit goes down by p(true)
    assert g[0, 0].tolist() == pytest.approx([1 / 8 - 1 / 3, 1 / 4 - 2 / 3, 5 / 8], abs=1e-6)


# ---- PDU -----------------------------------------------------------------------------------------

# logit margin (max - mean)^2: [0, ln3] -> (ln3 / 2)^2 = 0.301737, [0, 0] -> 0
# forget rows 0, 1: row 0 (0.301737 + 0) / 2, row 1 0 -> L_fgt = (ln 3)^2 / 16 = 0.075434
# retain row 2: target 1 at p = 3/4 -> L_rtn = ln(4/3) = 0.287682
L_FGT, L_RTN = LN3**2 / 16, math.log(4 / 3)


def bound_pdu(**params):
    obj = Objective({"pdu": {"weight": 1.0, **params}})
    obj.bind(None)  # PDU resolves nothing from the model: it makes its dual state
    return obj


def test_pdu_value_and_dual_ascent():
    obj = bound_pdu(epsilon=0.2, dual_init=2.0, dual_step=10.0)
    state = obj.terms[0].binding.state
    v = obj(hand_ctx(logits=hand_logits(requires_grad=True)))[1]["pdu"]
    # L_fgt + 2 (0.287682 - 0.2) = 0.075434 + 0.175364 = 0.250799
    assert v.item() == pytest.approx(L_FGT + 2.0 * (L_RTN - 0.2), abs=1e-6)
    # then lambda <- max(0, 2 + 10 (0.287682 - 0.2)) = 2.876821, used by the next step
    assert state.lam == pytest.approx(2.0 + 10.0 * (L_RTN - 0.2), abs=1e-6)
    v2 = obj(hand_ctx(logits=hand_logits(requires_grad=True)))[1]["pdu"]
    assert v2.item() == pytest.approx(L_FGT + (2.0 + 10.0 * (L_RTN - 0.2)) * (L_RTN - 0.2), abs=1e-5)
    # a constraint met with room: lambda falls, and stops at 0: 2 + 10 (0.287682 - 0.5) < 0
    obj = bound_pdu(epsilon=0.5, dual_init=2.0, dual_step=10.0)
    obj(hand_ctx(logits=hand_logits(requires_grad=True)))
    assert obj.terms[0].binding.state.lam == 0.0


def test_pdu_epsilon_null_is_fixed_on_the_first_training_step_and_evaluation_moves_nothing():
    obj = bound_pdu(tolerance=0.1, dual_init=2.0, dual_step=10.0)
    state = obj.terms[0].binding.state
    with torch.no_grad():  # an evaluation: the value, with the bound it would take, and no update
        v = obj(hand_ctx())[1]["pdu"]
    assert v.item() == pytest.approx(L_FGT + 2.0 * (L_RTN - 1.1 * L_RTN), abs=1e-6)
    assert state == DualState(lam=2.0, epsilon=None, steps=0)
    obj(hand_ctx(logits=hand_logits(requires_grad=True)))
    # epsilon = 1.1 x 0.287682 = 0.316450; lambda = 2 + 10 (-0.028768) = 1.712318
    assert state.epsilon == pytest.approx(1.1 * L_RTN, abs=1e-6)
    assert state.lam == pytest.approx(2.0 - 10.0 * 0.1 * L_RTN, abs=1e-6)


def test_pdu_warmup_holds_lambda():
    state = DualState(lam=5.0, epsilon=1.0)
    for retain in (3.0, 3.0):
        dual_update(state, retain, 0.1, dual_step=1.0, warmup_steps=2)
    assert state.lam == 5.0 and state.steps == 2
    dual_update(state, 3.0, 0.1, dual_step=1.0, warmup_steps=2)
    assert state.lam == 7.0  # 5 + 1 x (3 - 1)


def test_pdu_forget_gradient_flattens_the_logits():
    # forget only at row 2's position [0, ln3] (as row 0, batch of 1): d/dz (max - mean)^2 =
    # 2 m (onehot(argmax) - 1/V), m = ln3/2: (-ln3/2, ln3/2); descent lowers the top logit
    obj = bound_pdu(epsilon=1.0, dual_init=0.0, dual_step=0.0)
    full = hand_logits(requires_grad=True)
    (g,) = torch.autograd.grad(obj(hand_ctx({"forget": slice(2, 3), "retain": slice(1, 2)}, logits=full))[0], full)
    assert g[2, 1].tolist() == pytest.approx([-LN3 / 2, LN3 / 2], abs=1e-6)


def test_each_bind_makes_a_fresh_state_and_a_stateful_term_needs_bind():
    a, b = bound_pdu(epsilon=0.2), bound_pdu(epsilon=0.2)
    a(hand_ctx(logits=hand_logits(requires_grad=True)))
    assert a.terms[0].binding.state.steps == 1 and b.terms[0].binding.state.steps == 0
    assert a.terms[0].term.stateful and not Objective({"wga": 1.0}).terms[0].term.stateful
    assert "state" not in a.terms[0].params  # not a configurable parameter
    with pytest.raises(UnlearnError, match=r"unknown parameter 'state'"):
        Objective({"pdu": {"weight": 1.0, "state": 1}})
    with pytest.raises(ValueError, match="needs bind="):
        register_term("stateful_without_bind", segments=("forget",))(lambda ctx, state: ctx)
    with pytest.raises(RuntimeError, match=r"needs Objective.bind\(model\)"):
        Objective({"pdu": 1.0})(hand_ctx())


def test_parameters_are_checked_in_one_line():
    for spec, key in (({"wga": {"weight": 1, "beta": -1}}, "objective.wga.beta"),
                      ({"satimp": {"weight": 1, "beta2": -1}}, "objective.satimp.beta2"),
                      ({"undial": {"weight": 1, "beta": -1}}, "objective.undial.beta"),
                      ({"ceu": {"weight": 1, "skip_first": -1}}, "objective.ceu.skip_first"),
                      ({"pdu": {"weight": 1, "epsilon": 0}}, "objective.pdu.epsilon"),
                      ({"pdu": {"weight": 1, "dual_step": -1}}, "objective.pdu.dual_step")):
        with pytest.raises(UnlearnError, match=key.replace(".", r"\.")) as e:
            Objective(spec)
        assert "\n" not in str(e.value)


# ---- agreement with open-unlearning's formulas (re-expressed; full [B, T, V] tensors) -----------


def ou_token_ce(logits, labels):
    shift_logits, shift_labels = logits[..., :-1, :], labels[..., 1:]
    ce = nn.CrossEntropyLoss(ignore_index=-100, reduction="none")(shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1))
    return ce, shift_labels.reshape(-1) != -100


def ou_wga(logits, labels, beta):  # compute_wga_loss
    ce, valid = ou_token_ce(logits, labels)
    return -(((-ce).exp().detach() ** beta) * ce)[valid].mean()


def ou_satimp(logits, labels, beta1, beta2):  # compute_satimp_loss
    ce, valid = ou_token_ce(logits, labels)
    p = (-ce).exp().detach()
    return -((p**beta1) * ((1 - p) ** beta2) * ce)[valid].mean()


def ou_undial(logits, ref_logits, labels, beta):  # compute_undial_loss
    shift_labels, shift_logits, teacher = labels[..., 1:], logits[..., :-1, :], ref_logits[..., :-1, :]
    mask = torch.zeros_like(teacher)
    mask[torch.arange(mask.shape[0]).view(-1, 1, 1), torch.arange(mask.shape[1]).view(1, -1, 1), shift_labels.unsqueeze(-1)] = 1.0
    soft = F.softmax(teacher - mask * beta, dim=-1)
    return nn.CrossEntropyLoss(reduction="none")(shift_logits.reshape(-1, soft.size(-1)), soft.reshape(-1, soft.size(-1))).mean()


def ou_ceu(logits, labels, n):  # compute_batch_ceu + cross_entropy_unlearning_loss
    valid = labels != -100
    labels = labels.masked_fill((valid.cumsum(-1) <= n) & valid, -100)
    shift_labels, shift_logits = labels[..., 1:], logits[..., :-1, :]
    keep = shift_labels != -100
    vl, vy = shift_logits[keep], shift_labels[keep]
    target = vl.detach().clone().scatter(-1, vy.unsqueeze(-1), float("-inf"))
    return F.cross_entropy(vl, F.softmax(target, dim=-1))


def ou_pdu_forget(logits, labels):  # PDU.compute_loss, forget part
    flat = logits.reshape(-1, logits.size(-1))
    loss = (flat.max(-1)[0] - flat.mean(-1)) ** 2
    mask = (labels != -100).reshape(-1)
    return (loss * mask).sum() / mask.sum()


def random_batch(seed, prompt=2, rows=4, T=7, V=11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, T, V, generator=g) * 3
    ref = torch.randn(rows, T, V, generator=g) * 3
    labels = torch.randint(0, V, (rows, T), generator=g)
    labels[:, :prompt] = -100  # every row the same response length: their token mean = our sequence mean
    return logits, ref, labels


@pytest.mark.parametrize("seed", [0, 1])
def test_agrees_with_open_unlearning(seed):
    logits, ref, labels = random_batch(seed)
    seg = {"forget": slice(0, 4)}
    ctx = ctx_from_full(logits, labels, seg)
    assert wga(ctx, beta=1.0).item() == pytest.approx(ou_wga(logits, labels, 1.0).item(), rel=1e-5)
    assert wga(ctx, beta=2.5).item() == pytest.approx(ou_wga(logits, labels, 2.5).item(), rel=1e-5)
    assert satimp(ctx, beta1=5.0, beta2=1.0).item() == pytest.approx(ou_satimp(logits, labels, 5.0, 1.0).item(), rel=1e-5)
    for n in (0, 1, 2):
        assert ceu(ctx, skip_first=n).item() == pytest.approx(ou_ceu(logits, labels, n).item(), rel=1e-5)
    # UNDIAL: theirs averages over every position, prompt included, so compare with no prompt
    logits, ref, labels = random_batch(seed, prompt=1)
    ctx = ctx_from_full(logits, labels, seg, ref, ("forget",))
    for beta in (0.0, 10.0):
        assert undial(ctx, beta=beta).item() == pytest.approx(ou_undial(logits, ref, labels, beta).item(), rel=1e-5)


def test_pdu_agrees_with_open_unlearning_over_steps():
    """Three steps of open-unlearning's PDU.final_loss_value (dual update per step, after warm-up)
    against ours; their forget margin is read at the positions one later (labels unshifted), so
    they get the labels moved one to the left to read the same positions as ours."""
    eps, step, warmup = 1.5, 2.0, 1
    obj = bound_pdu(epsilon=eps, dual_init=3.0, dual_step=step, warmup_steps=warmup)
    preference = 3.0
    for seed in range(3):
        logits, _, labels = random_batch(seed, rows=4)
        logits.requires_grad_(True)
        ours = obj(ctx_from_full(logits, labels, {"forget": slice(0, 2), "retain": slice(2, 4)}))[0]
        moved = torch.cat([labels[:2, 1:], torch.full((2, 1), -100)], 1)
        forget = ou_pdu_forget(logits[:2], moved)
        ce, valid = ou_token_ce(logits[2:], labels[2:])
        retain = ce[valid].mean() - eps
        theirs = 1.0 * forget + preference * retain
        if seed >= warmup:  # can_update once the warm-up is over
            preference = max(0.0, preference + step * retain.item())
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
        assert obj.terms[0].binding.state.lam == pytest.approx(preference, rel=1e-6)


def test_full_vocabulary_terms_give_the_same_value_and_gradient_in_chunks(monkeypatch):
    """undial, ceu and pdu work on the raw logits through per_position: one position per chunk
    (checkpointed) gives what one pass gives."""
    import unlearn.models.forward as forward

    logits, ref, labels = random_batch(3)
    seg = {"forget": slice(0, 2), "retain": slice(2, 4)}
    terms = {
        "undial": lambda c: undial(c, beta=10.0),
        "ceu": lambda c: ceu(c, skip_first=1),
        "pdu": lambda c: bound_pdu(epsilon=1.0, dual_init=1.0)(c)[0],
    }
    for name, fn in terms.items():
        out = []
        for chunk in (None, 11):  # 11 elements: one position of the 11-token vocabulary at a time
            if chunk:
                monkeypatch.setattr(forward, "CHUNK_ELEMENTS", chunk)
            full = logits.clone().requires_grad_(True)
            v = fn(ctx_from_full(full, labels, seg, ref, ("forget",)))
            out.append((v.detach(), torch.autograd.grad(v, full)[0]))
        monkeypatch.undo()
        assert torch.allclose(out[0][0], out[1][0], rtol=1e-6) and torch.allclose(out[0][1], out[1][1], atol=1e-6), name


# ---- presets on the tiny model -------------------------------------------------------------------


def test_presets_are_listed():
    assert PRESETS["undial"] == {"undial": 1.0}
    assert PRESETS["satimp"] == {"satimp": 1.0, "nll": 0.1}
    assert PRESETS["wga"] == {"wga": 1.0, "nll": 1.0}
    assert PRESETS["ceu"] == {"ceu": 1.0}
    assert PRESETS["pdu"] == {"pdu": 1.0}
    assert Objective({"undial": 1.0}).reference_segments == ("forget",)
    assert not any(Objective({t: 1.0}).needs_reference for t in ("satimp", "wga", "ceu", "pdu"))


@pytest.mark.parametrize("preset", NEW)
def test_each_preset_trains_one_step_on_the_tiny_model(preset):
    from conftest import FORGET, RETAIN
    from unlearn.config import ModelConfig, TrainConfig
    from unlearn.data import Encoder, Example, StepBatcher, encode_examples
    from unlearn.distributed import new_accelerator
    from unlearn.models import load_model
    from unlearn.train import prepare_policy
    from unlearn.train.step import train_step

    torch.manual_seed(0)
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    model.requires_grad_(True)
    objective = Objective(preset_weights(preset))
    objective.bind(model)
    objective.restrict_trainable(model)
    enc = Encoder(tok, "qa", 96)
    batcher = StepBatcher(enc, forget=encode_examples(enc, [Example(p, r) for p, r in FORGET]),
                          forget_prompts=[p for p, _ in FORGET],
                          retain=encode_examples(enc, [Example(p, r) for p, r in RETAIN]),
                          segments=objective.segments, batch_size=2, seed=0)
    parts, _ = prepare_policy(new_accelerator("no", cpu=True), model, objective, batcher, TrainConfig(lr=1e-3, batch_size=2))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    result = train_step(parts, 0)
    assert result.nonfinite == [] and all(math.isfinite(v) for v in result.values.values()), result
    assert set(preset_weights(preset)) <= set(result.values)
    moved = [n for n, p in model.named_parameters() if n in before and not torch.equal(before[n], p)]
    assert len(moved) >= 0.5 * len(before), f"{preset}: {len(moved)}/{len(before)} moved"
    if preset == "pdu":  # the first step fixed epsilon at 1.1 x its retain NLL and lambda fell by 0.1 x it
        state = objective.terms[0].binding.state
        assert state.steps == 1 and state.lam == pytest.approx(100.0 - 0.1 * state.epsilon / 1.1, rel=1e-6)


def test_pdu_dual_state_survives_a_resume(tmp_path, data_files):
    """The dual variable and the bound are in every checkpoint and come back on --resume: without
    that, a resumed run restarts lambda at dual_init and re-measures epsilon on a changed model."""
    import json

    from conftest import tiny_config, write_config
    from unlearn.api import run

    def saved(step):
        state = json.loads((tmp_path / "run" / "checkpoints" / f"step-{step:07d}" / "state.json").read_text())
        return state["loop"]["terms"]["pdu"]

    cfg = tiny_config(tmp_path, data_files, objective="pdu",
                      train={"max_steps": 3, "save_every": 1, "keep_last": 5})  # checkpoints after steps 1, 2
    run(write_config(tmp_path / "a.yaml", cfg))
    two = saved(2)
    assert two["steps"] == 2 and two["epsilon"] is not None and two["lam"] != 100.0
    cfg["train"]["max_steps"] = 4  # resumes from step 2's checkpoint, writes step 3's
    run(write_config(tmp_path / "b.yaml", cfg), resume=True)
    three = saved(3)
    assert three["steps"] == 3  # counted on from the checkpoint, not from 0
    assert three["epsilon"] == two["epsilon"]  # the bound measured at step 1, not re-measured
