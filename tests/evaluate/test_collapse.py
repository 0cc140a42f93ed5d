"""Collapse is caught: metrics across the outputs of a set (distinct answers, distinct-n, the share
of the most frequent answer), loops inside a word count as degenerate, every rate has a 95 % Wilson
interval, and the verdict (forgotten? utility kept? collapsed?) from a metrics table. Values by hand."""

import pytest

from unlearn.evaluate import metrics as M

COLLAPSED = ["The American"] * 8 + ["the american.", "Paris is the capital."]


def test_distinct_answers_counts_normalised_outputs_over_the_set():
    from unlearn.evaluate.metrics.collapse import distinct_answers

    m = distinct_answers(COLLAPSED)
    # "The American", "the american." are one answer once normalised: 2 distinct of 10 outputs
    assert m.value == pytest.approx(0.2)
    # each output carries 1 / (how many outputs give its answer): their mean is the value
    assert m.per_example[0] == pytest.approx(1 / 9) and m.per_example[-1] == 1.0
    assert distinct_answers([]).value is None


def test_top_answer_share_is_the_most_frequent_answer():
    from unlearn.evaluate.metrics.collapse import top_answer_share

    m = top_answer_share(COLLAPSED)
    assert m.value == pytest.approx(0.9)
    assert m.per_example == [1.0] * 9 + [0.0]
    assert m.extra["answer"] == "the american"


def test_distinct_n_over_all_outputs_of_the_set():
    from unlearn.evaluate.metrics.collapse import distinct_n

    outs = ["a b a", "a b c", ""]
    # unigrams: a b a a b c -> 3 unique of 6; bigrams: (a b) (b a) (a b) (b c) -> 3 unique of 4
    assert distinct_n(outs, 1).value == pytest.approx(3 / 6)
    assert distinct_n(outs, 2).value == pytest.approx(3 / 4)
    assert distinct_n(["one", "two"], 2).value is None  # no bigram at all
    # the same answer to every prompt: each output alone is diverse, the set is not
    assert M.diversity(COLLAPSED[:8]).value == 1.0
    assert distinct_n(COLLAPSED[:8], 2).value == pytest.approx(1 / 8)


def test_cross_output_metrics_are_registered_with_sets_unit_and_direction():
    for name, higher in (("distinct_answers", True), ("top_answer_share", False),
                         ("distinct_1", True), ("distinct_2", True)):
        spec = M.get_metric(name)
        assert set(spec.sets) == {"forget", "forget_test", "retain", "normal"} and spec.unit == "fraction"
        assert M.direction(name, M.FORBIDDEN) is higher and M.direction(name, M.DESIRED) is higher


def test_loops_inside_a_word_are_degenerate():
    assert M.is_degenerate("Vefbrjartbrjartbrjartbrjart")
    assert M.is_degenerate("Vefbrjartbrjart")
    assert M.is_degenerate("Sure: Vefbrjartbrjartbrjartbrjartbrjartbrjart")
    m = M.degenerate_rate(["Vefbrjartbrjartbrjart", "no " * 12, "A normal answer about Mississippi."])
    assert m.per_example == [1.0, 1.0, 0.0]
    # real words with a short repeat, and one looping token in a long answer, are not loops
    for text in ("couscous", "Mississippi", "hahaha", "Mississippian Mississippians",
                 "The answer is long and fine ============ with a rule line in the middle of it all"):
        assert not M.is_degenerate(text), text


def test_wilson_interval_by_hand():
    from unlearn.evaluate.metrics.interval import rate_interval, wilson

    # k=0, n=18: centre = (z^2/2n) / (1 + z^2/n) = half-width, so the interval is [0, 2 x 0.0879]
    lo, hi = wilson(0, 18)
    assert lo == 0.0 and hi == pytest.approx(0.176, abs=5e-4)
    lo, hi = wilson(9, 18)
    assert (lo, hi) == (pytest.approx(0.290, abs=5e-4), pytest.approx(0.710, abs=5e-4))
    assert wilson(18, 18)[1] == 1.0
    with pytest.raises(ValueError):
        wilson(1, 0)
    # an interval for yes/no values only; None (left out) does not count
    assert rate_interval([0.0, 1.0, None]) == wilson(1, 2)
    assert rate_interval([0.5, 1.0]) is None and rate_interval([None]) is None


def _row(o, u, hib, unit="fraction", interval=None):
    r = {"original": o, "unlearned": u, "change": None if o is None or u is None else u - o,
         "higher_is_better": hib, "better": None if o is None or o == u else (u > o) == hib, "unit": unit, "description": "d"}
    if interval:
        r["interval"] = interval
    return r


def _table(top=0.9, distinct=0.1, cosine=0.15, ppl=37.0, leak=0.0, retain=1.0):
    return {
        "forget": {"leak_rate": _row(0.9, leak, False, interval={"unlearned": [0.0, 0.176]}),
                   "diversity": _row(0.65, 0.99, True)},
        "forget_test": {"leak_rate": _row(0.8, 0.1, False, interval={"unlearned": [0.03, 0.3]})},
        "retain": {"retain_accuracy": _row(1.0, retain, True)},
        "normal": {"similarity_cosine": _row(None, cosine, True, "cosine"),
                   "fluency": _row(2.3, ppl, False, "perplexity"),
                   "distinct_answers": _row(0.9, distinct, True), "top_answer_share": _row(0.1, top, False)},
    }


def test_verdict_forgotten_and_utility_with_the_numbers_behind():
    from unlearn.config.evaluation import VerdictConfig
    from unlearn.evaluate.verdict import verdict

    v = verdict(_table(), VerdictConfig())
    assert v["forgotten"]["met"] is False  # forget_test leaks 10 % > 5 %
    checks = {(c["set"], c["metric"]): c for c in v["forgotten"]["checks"]}
    assert checks[("forget", "leak_rate")]["met"] is True and checks[("forget_test", "leak_rate")]["met"] is False
    assert checks[("forget", "leak_rate")]["interval"] == [0.0, 0.176]
    assert ("forget", "diversity") not in checks  # only the forgetting rates
    assert v["utility"]["met"] is False and v["collapsed"] is True
    failed = {(c["set"], c["metric"]) for c in v["utility"]["checks"] if not c["met"]}
    assert failed == {("normal", "similarity_cosine"), ("normal", "fluency"), ("normal", "distinct_answers"),
                      ("normal", "top_answer_share")}
    good = verdict(_table(top=0.1, distinct=0.9, cosine=0.9, ppl=3.0, retain=0.95), VerdictConfig(forget_target=0.2))
    assert good["forgotten"]["met"] is True and good["utility"]["met"] is True and good["collapsed"] is False
    # the thresholds are the user's: a looser cosine and fluency, a stricter retain ratio
    loose = verdict(_table(top=0.1, distinct=0.9, cosine=0.5, ppl=3.0, retain=0.95),
                    VerdictConfig(min_cosine=0.4, retain_ratio=0.99))
    assert [c["metric"] for c in loose["utility"]["checks"] if not c["met"]] == ["retain_accuracy"]


def test_verdict_thresholds_are_config_keys_with_checks():
    from unlearn.config import describe_keys
    from unlearn.config.evaluation import VerdictConfig
    keys = {k for k, *_ in describe_keys()}
    assert {"eval.verdict.forget_target", "eval.verdict.min_cosine", "eval.verdict.retain_ratio",
            "eval.verdict.max_fluency_ratio", "eval.verdict.max_top_answer_share",
            "eval.verdict.min_distinct_ratio"} <= keys
    assert VerdictConfig().forget_target == 0.05 and VerdictConfig().min_cosine == 0.8


def test_bad_verdict_thresholds_are_one_line_errors(tmp_path, data_files):
    from conftest import tiny_config, write_config

    from unlearn.config import load_config
    from unlearn.errors import UnlearnError

    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files))
    with pytest.raises(UnlearnError, match=r"eval\.verdict\.forget_target: must be a fraction in \[0, 1\], got 1.5"):
        load_config(path, ["eval.verdict.forget_target=1.5"])
    with pytest.raises(UnlearnError, match=r"eval\.verdict\.max_fluency_ratio: must be >= 1"):
        load_config(path, ["eval.verdict.max_fluency_ratio=0.5"])
    assert load_config(path, ["eval.verdict.min_cosine=0.6"]).eval.verdict.min_cosine == 0.6
