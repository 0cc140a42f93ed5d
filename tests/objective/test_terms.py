"""Each loss term on hand-made logits, with expected values worked out by hand."""

import math

import pytest
import torch

from unlearn.data.batch import Batch
from unlearn.data.encode import IGNORE
from unlearn.objective import Objective, StepContext, available_terms
from unlearn.objective.ga import ga
from unlearn.objective.kl import kl
from unlearn.objective.mismatch import mismatch
from unlearn.objective.nll import nll

LN3 = math.log(3.0)
I = IGNORE

# Three rows, vocabulary of 2. Response positions (label != IGNORE, shifted by one):
#   row 0: labels 1, 0   -> two positions    row 1: label 1 -> one    row 2: label 1 -> one
LABELS = torch.tensor([[I, I, 1, 0], [I, I, I, 1], [I, I, 1, I]])
# Policy logits at those four positions, in row order:
#   [0, ln3] -> p = (1/4, 3/4);   [0, 0] -> p = (1/2, 1/2)
POLICY = torch.tensor([[0.0, LN3], [0.0, 0.0], [0.0, 0.0], [0.0, LN3]])
REFERENCE = torch.zeros(4, 2)  # the reference is uniform everywhere


def make_ctx(segments, logits=POLICY, reference=REFERENCE, ref_segments=("retain",)):
    batch = Batch(torch.zeros_like(LABELS), torch.ones_like(LABELS), LABELS, segments)
    select = LABELS[:, 1:] != I
    rows = torch.arange(3).unsqueeze(1).expand_as(select)[select]
    targets = LABELS[:, 1:][select]

    def policy(ids, mask, labels):
        return logits, targets, rows

    def ref_fn(ids, mask, labels):
        # rows asked for -> their positions in the full position list
        keep = torch.isin(rows, torch.tensor(sorted({r for s in ref_segments for r in range(segments[s].start, segments[s].stop)})))
        return reference[keep], targets[keep], rows[keep]

    return StepContext(policy, batch, ref_fn, ref_segments)


FG_RT = {"forget": slice(0, 2), "retain": slice(2, 3)}
NLL_34, NLL_12 = -math.log(0.75), -math.log(0.5)
# Per sequence first, then over the batch: row 0 -> (NLL_34 + NLL_12)/2, row 1 -> NLL_12.
SEQ_MEAN_0_1 = ((NLL_34 + NLL_12) / 2 + NLL_12) / 2


def test_ga_is_minus_per_sequence_mean_nll():
    v = ga(make_ctx(FG_RT))
    assert v.item() == pytest.approx(-SEQ_MEAN_0_1, abs=1e-6)  # -0.591784
    token_mean = (NLL_34 + 2 * NLL_12) / 3
    assert abs(v.item() + token_mean) > 1e-2  # not a token-level mean


def test_mismatch_is_nll_of_its_segment():
    ctx = make_ctx({"forget": slice(2, 3), "mismatch": slice(0, 2)})
    assert mismatch(ctx).item() == pytest.approx(SEQ_MEAN_0_1, abs=1e-6)


def test_nll_on_retain():
    assert nll(make_ctx(FG_RT)).item() == pytest.approx(NLL_34, abs=1e-6)  # 0.287682


def test_forward_kl_reference_to_policy():
    # KL((1/2,1/2) || (1/4,3/4)) = 1/2 ln 2 + 1/2 ln(2/3) = 1/2 ln(4/3)
    assert kl(make_ctx(FG_RT), reduction="mean").item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-6)  # 0.143841
    # direction matters: the reverse KL((1/4,3/4) || (1/2,1/2)) is a different number
    reverse = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert abs(kl(make_ctx(FG_RT), reduction="mean").item() - reverse) > 1e-2


def test_kl_is_zero_when_policy_equals_reference():
    assert kl(make_ctx(FG_RT, reference=POLICY), reduction="mean").item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_kl_is_finite_with_extreme_half_precision_logits(dtype):
    big = torch.tensor([[0.0, 6e4], [-6e4, 0.0], [0.0, 0.0], [6e4, -6e4]]).to(dtype)
    v = kl(make_ctx(FG_RT, logits=big, reference=torch.tensor([[6e4, 0.0]] * 4).to(dtype)), reduction="mean")
    assert v.dtype == torch.float32 and torch.isfinite(v)


def test_objective_is_the_weighted_sum():
    ctx = make_ctx({"forget": slice(0, 1), "mismatch": slice(1, 2), "retain": slice(2, 3)})
    obj = Objective({"ga": 0.5, "mismatch": 1.0, "kl": 1.0})
    total, values = obj(ctx)
    assert set(values) == {"ga", "mismatch", "kl"}
    expected = 0.5 * values["ga"] + values["mismatch"] + values["kl"]
    assert total.item() == pytest.approx(expected.item(), abs=1e-7)
    assert values["ga"].item() == pytest.approx(-(NLL_34 + NLL_12) / 2, abs=1e-6)
    assert obj.segments == ("forget", "mismatch", "retain")
    assert obj.reference_segments == ("retain",)


def test_registry_errors_list_what_exists():
    from unlearn.errors import UnlearnError

    with pytest.raises(UnlearnError, match=r"unknown loss term 'gaa'; registered terms: .*ga.*kl"):
        Objective({"gaa": 1.0})
    with pytest.raises(ValueError, match="registered twice"):
        from unlearn.objective import register_term

        register_term("ga", segments=("forget",))(lambda ctx: ctx)
    assert {"ga", "mismatch", "kl", "nll"} <= set(available_terms())


# Retain = rows 0 and 1 (two positions, then one); the reference is uniform. Per-position KL:
#   row 0: KL(U || (1/4,3/4)) = 1/2 ln(4/3), then KL(U || U) = 0;   row 1: 0.
KL_ROW0 = 0.5 * math.log(4 / 3)
RT_LONG = {"forget": slice(2, 3), "retain": slice(0, 2)}


def test_kl_mean_reduction_divides_each_sequence_by_its_length():
    # mean (default): row 0 -> KL_ROW0 / 2, row 1 -> 0; then over the batch: KL_ROW0 / 4
    assert kl(make_ctx(RT_LONG), reduction="mean").item() == pytest.approx(KL_ROW0 / 4, abs=1e-6)
    assert Objective({"kl": 1.0})(make_ctx(RT_LONG))[1]["kl"].item() == pytest.approx(KL_ROW0 / 4, abs=1e-6)


def test_kl_sum_reduction_sums_each_sequence_as_the_paper():
    # sum (the paper's L_nor): row 0 -> KL_ROW0, row 1 -> 0; then over the batch: KL_ROW0 / 2
    assert kl(make_ctx(RT_LONG), reduction="sum").item() == pytest.approx(KL_ROW0 / 2, abs=1e-6)
    obj = Objective({"kl": {"weight": 2.0, "reduction": "sum"}})
    total, values = obj(make_ctx(RT_LONG))
    assert values["kl"].item() == pytest.approx(KL_ROW0 / 2, abs=1e-6)
    assert total.item() == pytest.approx(KL_ROW0, abs=1e-6)


def test_kl_reduction_rejects_other_values_in_one_line():
    from unlearn.errors import UnlearnError

    with pytest.raises(UnlearnError, match=r"objective\.kl\.reduction") as e:
        Objective({"kl": {"weight": 1.0, "reduction": "max"}})
    assert "\n" not in str(e.value)


def _full_shape_ops_in_backward(total: torch.Tensor, logits: torch.Tensor) -> tuple[int, torch.Tensor]:
    """(how many ops of the backward make a tensor of the logits' whole shape, d total / d logits)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and out.shape == logits.shape:
                Count.n += 1
            return out

    with Count():
        (grad,) = torch.autograd.grad(total, logits)
    return Count.n, grad


def test_backward_writes_the_logits_gradient_once_not_once_per_segment(monkeypatch):
    """Each segment's logits come from one torch.split of the step's logits. With a slice per
    segment, the backward filled a zero tensor of the whole [positions, vocab] shape for each
    segment and added them up: three fills and two adds of the vocabulary-sized logits a step."""
    from unlearn.objective import context

    segments = {"forget": slice(0, 1), "mismatch": slice(1, 2), "retain": slice(2, 3)}
    objective = Objective({"ga": 0.5, "mismatch": 1.0, "kl": 1.0})

    def run():
        logits = POLICY.clone().requires_grad_(True)
        total, _ = objective(make_ctx(segments, logits=logits))
        return _full_shape_ops_in_backward(total, logits)

    ops, grad = run()
    monkeypatch.setattr(context, "split_positions", lambda logits, spans: {k: logits[s] for k, s in spans.items()})
    sliced_ops, sliced_grad = run()
    assert torch.allclose(grad, sliced_grad, atol=1e-7) and grad.abs().sum() > 0
    assert ops == 1 and sliced_ops >= 3  # one concatenation, against a fill per segment and adds


def test_split_positions_gives_views_and_an_empty_segment_its_empty_slice():
    from unlearn.objective.context import split_positions

    logits = torch.arange(12.0).reshape(6, 2)
    parts = split_positions(logits, {"a": slice(0, 2), "b": slice(3, 6), "c": slice(3, 3)})
    assert torch.equal(parts["a"], logits[0:2]) and torch.equal(parts["b"], logits[3:6])
    assert parts["c"].shape == (0, 2)
    assert parts["a"].data_ptr() == logits.data_ptr()  # a view, no copy
