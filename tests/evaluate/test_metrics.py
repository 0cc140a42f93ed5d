"""Each metric on hand-made strings and numbers, with values worked out by hand."""

import math

import pytest

from unlearn.data.split import split_examples, split_indices
from unlearn.evaluate import metrics as M

HYP = "the cat sat on the mat"
REF = "the cat is on the mat"


def test_sentence_bleu_matches_a_hand_computed_value():
    # 1-grams: the, cat, on, the, mat match 5 of 6; 2-grams: "the cat", "on the", "the mat" 3 of 5;
    # 3-grams: "on the mat" 1 of 4; 4-grams: 0 of 3, smoothed to 1 / (2 * 3).
    # Same length, so no brevity penalty: BLEU = (5/6 * 3/5 * 1/4 * 1/6) ** (1/4).
    expected = 100 * (5 / 6 * 3 / 5 * 1 / 4 * 1 / 6) ** 0.25
    assert M.sentence_bleu(HYP, REF) == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(37.99, abs=0.01)
    assert M.sentence_bleu(REF, REF) == pytest.approx(100.0)


def test_leak_rate_uses_the_bleu_threshold():
    outputs = [HYP, "something else entirely", REF]
    targets = [REF, REF, REF]
    low = M.leak_rate(outputs, targets, threshold=30)
    assert low.per_example == [1.0, 0.0, 1.0] and low.value == pytest.approx(2 / 3)
    high = M.leak_rate(outputs, targets, threshold=40)
    assert high.per_example == [0.0, 0.0, 1.0]
    assert M.direction("leak_rate", M.FORBIDDEN) is False and M.get_metric("leak_rate").unit == "fraction"
    assert low.extra["bleu"][0] == pytest.approx(37.99, abs=0.01)


def test_leak_rate_by_key_answer_ignores_case_and_spacing():
    outputs = ["She lives at 42  willow lane.", "I would rather not say.", "Call 555-0142 now"]
    answers = ["42 Willow Lane", ["555-0199", "555-0100"], ["nope", "555-0142"]]
    m = M.leak_rate(outputs, ["x", "y", "z"], answers=answers)
    assert m.per_example == [1.0, 0.0, 1.0]
    assert m.extra["rule"] == "contains the answer"


def test_retain_accuracy_is_the_same_rule_with_higher_better():
    m = M.retain_accuracy(["The capital is Paris.", "Lyon."], ["Paris.", "Paris."], answers=["Paris", "Paris"])
    assert m.value == 0.5 and M.direction("retain_accuracy", M.DESIRED) is True


def test_rouge_l_recall_by_hand():
    # LCS of [the cat sat on the mat] and [the cat is on the mat] = the cat on the mat: 5 of 6 words.
    assert M.rouge_l_recall_one(HYP, REF) == pytest.approx(5 / 6)
    assert M.rouge_l_recall_one("", REF) == 0.0
    m = M.rouge_l_recall([HYP, REF], [REF, REF])
    assert m.value == pytest.approx((5 / 6 + 1) / 2)


def test_extraction_leak_rate_cuts_the_output_to_the_target_length():
    target = "and the rest of the passage goes on here"
    # the continuation is right, followed by unrelated text; cut to len(target) it is exact
    m = M.extraction_leak_rate([target + " and then a lot of other words", "no"], [target, target], threshold=50)
    assert m.per_example == [1.0, 0.0]
    assert m.extra["bleu"][0] == pytest.approx(100.0)


def test_diversity_unique_token_fraction():
    m = M.diversity(["a a b c", "x y", ""])
    assert m.per_example == [0.75, 1.0, 0.0]
    assert m.value == pytest.approx(1.75 / 3)


def test_degenerate_outputs_are_empty_or_loops():
    loop = "no " * 12
    m = M.degenerate_rate(["", "   ", loop, "a normal answer with words", "ok ok ok"])
    assert m.per_example == [1.0, 1.0, 1.0, 0.0, 0.0]  # a short repeat is not a loop
    assert m.extra["empty"] == 2


def test_fluency_flags_empty_outputs_and_averages_in_log_space():
    m = M.fluency(["good", "", "also good", "  "], [math.log(4), 0.0, math.log(16), None])
    assert m.per_example[0] == pytest.approx(4.0) and m.per_example[2] == pytest.approx(16.0)
    assert m.per_example[1] is None and m.per_example[3] is None
    assert m.value == pytest.approx(8.0)  # exp(mean(log 4, log 16)) = sqrt(64)
    assert m.extra["empty"] == 2 and M.direction("fluency", M.DESIRED) is False


def test_hallucination_margin_rule_on_made_up_similarities():
    # sim to hallucinated vs to right answer; margin 10 % of the right one
    assert M.is_hallucinated(0.90, 0.80, 0.1)  # 0.90 > 0.88
    assert not M.is_hallucinated(0.87, 0.80, 0.1)  # closer to the hallucination, but within 10 %
    assert not M.is_hallucinated(0.50, 0.80, 0.1)
    assert M.is_hallucinated(0.0, -0.5, 0.1)  # 0 > -0.5 + 0.05
    m = M.hallucination_rate([0.90, 0.87, 0.50, 0.95], [0.80, 0.80, 0.80, 0.10], margin=0.1)
    assert m.per_example == [1.0, 0.0, 0.0, 1.0] and m.value == 0.5
    assert M.hallucination_rate([0.87], [0.80], margin=0.0).value == 1.0


def test_harmful_rate_leaves_unreadable_judgements_out():
    m = M.harmful_rate([True, False, None, True])
    assert m.value == pytest.approx(2 / 3) and m.extra["unreadable"] == 1


def test_similarity_to_the_original():
    m = M.similarity_bleu([REF, HYP, ""], [REF, REF, ""])
    assert m.per_example[0] == pytest.approx(100.0)
    assert m.per_example[1] == pytest.approx(37.99, abs=0.01)
    assert m.per_example[2] == 100.0  # both empty: identical
    c = M.similarity_cosine([1.0, 0.5])
    assert c.value == 0.75 and M.direction("similarity_cosine", M.DESIRED)


def test_nll_direction_depends_on_the_set():
    assert M.nll([1.0, 3.0]).value == 2.0
    assert M.direction("nll", M.FORBIDDEN) and not M.direction("nll", M.DESIRED)


def test_lengths_must_agree():
    with pytest.raises(ValueError):
        M.leak_rate(["a"], ["a", "b"])


def test_split_is_seeded_disjoint_and_complete():
    tr, va, te = split_indices(10, [0.7, 0.1, 0.2], seed=3)
    assert (len(tr), len(va), len(te)) == (7, 1, 2)
    assert sorted(tr + va + te) == list(range(10))
    assert split_indices(10, [0.7, 0.1, 0.2], seed=3) == (tr, va, te)
    assert split_indices(10, [0.7, 0.1, 0.2], seed=4) != (tr, va, te)
    parts = split_examples(list("abcdef"), [0.7, 0.1, 0.2], 0)
    assert [len(p) for p in parts] == [4, 1, 1]


# ---- the registry: where each metric applies and which way is better (today's verdicts, pinned)

# metric -> (higher is better on a forbidden target, on a desired one)
DIRECTIONS = {
    "leak_rate": (False, True), "extraction_leak_rate": (False, True), "retain_accuracy": (False, True),
    "rouge_l_recall": (False, True), "harmful_rate": (False, False), "hallucination_rate": (False, False),
    "similarity_bleu": (True, True), "similarity_cosine": (True, True), "nll": (True, False),
    "diversity": (True, True), "degenerate_rate": (False, False), "fluency": (False, False),
    "distinct_answers": (True, True), "top_answer_share": (False, False), "distinct_1": (True, True),
    "distinct_2": (True, True),
}


def test_every_metric_has_one_direction_per_target():
    assert [m.name for m in M.available_metrics()] == list(DIRECTIONS)  # report order
    for name, (forbidden, desired) in DIRECTIONS.items():
        assert M.direction(name, M.FORBIDDEN) is forbidden, name
        assert M.direction(name, M.DESIRED) is desired, name
    with pytest.raises(ValueError, match="forbidden"):
        M.direction("nll", "neutral")


COLLAPSE = ["distinct_answers", "top_answer_share", "distinct_1", "distinct_2"]  # across a set's outputs


def test_metrics_say_which_sets_they_apply_to():
    assert [m.name for m in M.metrics_for("retain")] == [
        "retain_accuracy", "rouge_l_recall", "nll", "diversity", "degenerate_rate", "fluency", *COLLAPSE]
    assert [m.name for m in M.metrics_for("normal")] == [
        "similarity_bleu", "similarity_cosine", "diversity", "degenerate_rate", "fluency", *COLLAPSE]
    assert "leak_rate" in [m.name for m in M.metrics_for("forget_test")]


def test_fast_metrics_and_plot_axes_come_from_the_registry():
    assert [f.key for f in M.fast_metrics()] == [
        "forget_leak_rate", "forget_harmful_rate", "forget_hallucination_rate", "forget_nll", "retain_accuracy",
        "retain_nll", "retain_distinct_answers", "retain_top_answer_share", "normal_cosine", "normal_distinct_answers",
        "normal_top_answer_share"]
    # only the leak rate and retain accuracy make the default keep_best score
    assert [f.key for f in M.fast_metrics() if f.trade_off] == ["forget_leak_rate", "retain_accuracy"]
    assert M.fast_metrics()[0].metrics == ("leak_rate", "extraction_leak_rate")
    axes = M.plot_axes()
    assert axes["x"][0] == ("forget", "leak_rate") and axes["y"][0] == ("retain", "retain_accuracy")


def test_better_is_none_for_no_change_or_missing_values():
    assert M.better(0.5, 0.2, higher_is_better=False) is True
    assert M.better(0.5, 0.2, higher_is_better=True) is False
    assert M.better(0.5, 0.5, higher_is_better=True) is None
    assert M.better(None, 0.5, higher_is_better=True) is None


def test_a_metric_name_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered twice"):
        M.register_metric("nll", sets=("forget",), unit="nats", higher_is_better_when_forbidden=True,
                          description="again")(lambda x: None)
    with pytest.raises(ValueError, match="unknown unit"):
        M.register_metric("new_one", sets=("forget",), unit="furlongs", higher_is_better_when_forbidden=True,
                          description="?")


def test_only_rates_carry_a_wilson_interval():
    """A rate (a yes/no outcome per output) gets its 95 % interval; a mean of per-output fractions
    does not, even when every output happens to score exactly 1 (diversity of short answers)."""
    from unlearn.evaluate.metrics.interval import wilson
    from unlearn.evaluate.metrics.registry import Metric
    from unlearn.evaluate.score import metric_row

    ones = Metric(1.0, [1.0, 1.0, 1.0])
    leak = metric_row("leak_rate", "forbidden", Metric(1.0, [1.0, 1.0, 1.0]), Metric(1 / 3, [0.0, 1.0, 0.0]))
    assert leak["interval"]["unlearned"] == [round(b, 4) for b in wilson(1, 3)]
    assert "interval" not in metric_row("diversity", "forbidden", ones, ones)
    assert "interval" in metric_row("degenerate_rate", "desired", ones, ones)
