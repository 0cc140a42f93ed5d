"""The registries own their names: typed term parameters, presets, judges, and registering all of
them from a module outside unlearn (the config's `imports`), run end to end on the tiny model."""

import json
import textwrap

import pytest
from typer.testing import CliRunner

from conftest import tiny_config, write_config
from unlearn.cli import app
from unlearn.config import load_config
from unlearn.errors import UnlearnError
from unlearn.evaluate.judges import judge_problem, judge_spec, load_judge
from unlearn.objective import Objective, get_term, register_term

runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


# ---- loss terms: typed parameters


def test_term_parameters_are_typed_and_checked_like_config_keys():
    obj = Objective({"npo": {"weight": 1.0, "beta": 1}})  # an integer where a float is expected
    assert obj.terms[0].params == {"beta": 1.0} and isinstance(obj.terms[0].params["beta"], float)
    with pytest.raises(UnlearnError, match=r"objective\.npo\.beta: expected a number, got 'high'"):
        Objective({"npo": {"weight": 1.0, "beta": "high"}})
    with pytest.raises(UnlearnError, match=r"objective\.npo\.beta: must be > 0, got 0.0"):
        Objective({"npo": {"weight": 1.0, "beta": 0}})
    with pytest.raises(UnlearnError, match=r"objective\.rmu\.train_layers: must be >= 1"):
        Objective({"rmu": {"weight": 1.0, "train_layers": 0}})
    with pytest.raises(UnlearnError, match=r"unknown parameter 'gamma'; valid: weight, beta, delta"):
        Objective({"simnpo": {"weight": 1.0, "gamma": 1.0}})


def test_a_bad_term_parameter_in_a_file_names_its_line(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, objective={"npo": {"weight": 1.0, "beta": "x"}, "kl": 1.0})
    r = cli("config", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 2
    assert "c.yaml line" in r.output and "objective.npo.beta: expected a number, got 'x'" in r.output


def test_every_built_in_parameter_has_a_help_text():
    for name in ("npo", "simnpo", "dpo", "rmu"):
        rows = get_term(name).describe_params()
        assert rows and all(row[0].startswith(f"objective.{name}.") and row[3] for row in rows), name
    assert get_term("ga").describe_params() == []


def test_terms_lists_parameters_with_their_help(monkeypatch):
    import unlearn.cli

    monkeypatch.setattr(unlearn.cli.out, "width", 250)  # no wrapping
    r = cli("terms")
    assert r.exit_code == 0, r.output
    assert "objective.rmu.train_layers" in r.output and "Steering coefficient" in r.output


def test_a_params_dataclass_must_match_the_function():
    from dataclasses import dataclass

    from unlearn.config import setting

    @dataclass
    class P:
        scale: float = setting(1.0, help="how much")

    with pytest.raises(ValueError, match="differ from P's fields"):
        register_term("mismatched_params", segments=("forget",), params=P)(lambda ctx, size: ctx)
    with pytest.raises(ValueError, match="P holds the defaults"):
        register_term("defaulted_params", segments=("forget",), params=P)(lambda ctx, scale=2.0: ctx)


# ---- judges


def test_judge_values_are_checked_by_the_registry():
    assert judge_problem("refusal") is None and judge_problem("classifier:some/model") is None
    for bad in ("classifier", "refusal:x", "nope", "llm:"):
        problem = judge_problem(bad)
        assert problem and "classifier:PATH_OR_ID" in problem and "refusal" in problem, bad
    assert judge_spec("similarity").needs == ("embedder",) and judge_spec("refusal").needs == ()


def test_a_judge_gets_what_it_declared_it_needs():
    from unlearn.config import EvalConfig

    class FakeEmbedder:
        def max_similarity(self, outputs, refs):
            return [1.0 if o in refs else 0.0 for o in outputs]

    judge = load_judge("similarity", EvalConfig(), "cpu", embedder=FakeEmbedder())
    assert judge(["q", "q"], ["secret", "other"], ["secret"]) == [True, False]


# ---- everything registered from a module outside unlearn

TOY_MODULE = '''
from dataclasses import dataclass

from unlearn.config import setting
from unlearn.evaluate.judges import register_judge
from unlearn.evaluate.metrics import Metric, mean, register_metric
from unlearn.objective import register_term
from unlearn.objective.presets import register_preset


@dataclass
class ToyParams:
    scale: float = setting(1.0, help="Multiplies gradient ascent.")


@register_term("toy_ga", segments=("forget",), params=ToyParams)
def toy_ga(ctx, scale):
    """Scaled gradient ascent."""
    return -scale * ctx.seq_nll("forget").mean()


register_preset("toy", {"toy_ga": 1.0, "kl": 1.0})


@register_metric("toy_chars", sets=("forget", "retain"), unit="fraction", higher_is_better_when_forbidden=False,
                 follows_target=True, description="outputs longer than 3 characters")
def _toy_chars(x):
    vals = [float(len(o) > 3) for o in x.outputs]
    return Metric(mean(vals), vals)


class Always:
    name = "always"

    def __call__(self, prompts, outputs, references):
        return [True] * len(outputs)


@register_judge("always")
def _always(arg, eval_cfg, device):
    return Always()
'''


def test_a_module_named_in_imports_registers_a_term_metric_and_judge_end_to_end(tmp_path, data_files, plugin_module):
    plugin_module("toy_unlearn_plugin", textwrap.dedent(TOY_MODULE))
    cfg = tiny_config(tmp_path, data_files, objective="toy", imports=["toy_unlearn_plugin"],
                      train={"max_steps": 2}, eval={"max_new_tokens": 4, "judge": "always"})
    path = write_config(tmp_path / "c.yaml", cfg)
    loaded = load_config(path, ["objective.toy_ga.scale=0.5"])
    assert loaded.objective == {"toy_ga": {"weight": 1.0, "scale": 0.5}, "kl": 1.0}
    r = cli("run", path)
    assert r.exit_code == 0, r.output
    r = cli("eval", path)
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())["metrics"]
    assert m["forget"]["toy_chars"]["higher_is_better"] is False and m["retain"]["toy_chars"]["higher_is_better"]
    assert m["forget"]["harmful_rate"]["unlearned"] == 1.0
    assert list(m["forget"])[-1] == "toy_chars"  # after the built-ins


def test_a_module_that_cannot_be_imported_names_the_line(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, imports=["no_such_unlearn_plugin"])
    with pytest.raises(UnlearnError, match=r"c\.yaml line \d+: imports\.0: cannot import module 'no_such_unlearn_plugin'"):
        load_config(write_config(tmp_path / "c.yaml", cfg))
