"""Every packaged recipe runs (tiny model, fixture data, two steps), so none can rot; recipes are
found by name; the baseline presets run through the real train loop."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import schemas
from conftest import tiny_config, write_config
from unlearn.cli import app
from unlearn.config import load_config
from unlearn.recipes import FOLDER, available_recipes, find_recipe

runner = CliRunner()
PAPER_RECIPES = ["copyright", "hallucination", "harmful", "harmful-llama2-lora", "templated"]
RECIPES = sorted(PAPER_RECIPES + ["demo", "demo_teach", "muse-news", "tofu", "wmdp"])


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return schemas.write_all(tmp_path_factory.mktemp("data"))


def data_overrides(name, files):
    """Point a recipe's data at the fixture files in the same schemas."""
    if name == "copyright":
        return [f"data.forget.path={files['book']}", f"data.retain.path={files['corpus']}"]
    forget = files["halueval"] if name == "hallucination" else files["pku"]
    out = [f"data.forget.path={forget}", f"data.retain.path={files['truthfulqa']}"]
    if name != "templated":  # templated's mismatch pool is its inline refusal list
        out.append(f"data.mismatch.path={files['truthfulqa']}")
    return out


def test_every_recipe_opens_with_what_it_does_and_its_command():
    assert sorted(r.name for r in available_recipes()) == RECIPES
    for r in available_recipes():
        first = r.path.read_text().splitlines()[0]
        assert first.startswith("# ") and len(first) <= 110, first
        assert r.command.startswith(("unlearn run " + r.name, "unlearn finetune " + r.name)), r.command
        load_config(r.path)  # valid as shipped


def test_recipes_are_found_by_name_path_or_file_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for ref in ("harmful", "harmful.yaml", "recipes/harmful.yaml"):
        assert find_recipe(ref) == FOLDER / "harmful.yaml"
        assert load_config(ref).output_dir == "runs/harmful-opt1.3b"
    assert find_recipe("elsewhere/harmful.yaml") is None and find_recipe("nope") is None
    # a local file of that name wins over the packaged recipe
    (tmp_path / "harmful.yaml").write_text("model: {name: tiny-random-llama}\noutput_dir: mine\n")
    assert load_config("harmful.yaml").output_dir == "mine"
    r = cli("run", "harmfull")
    assert r.exit_code == 2 and "harmfull: config file not found (packaged recipes: copyright," in r.output


def test_recipes_and_datasets_commands_list_them():
    r = cli("recipes")
    assert r.exit_code == 0 and all(name in r.output for name in RECIPES)
    r = cli("datasets")
    assert r.exit_code == 0
    for name in ("pku_saferlhf", "truthfulqa", "halueval", "text"):
        assert name in r.output, name
    from unlearn.data.sources import get_source

    pku = get_source("pku_saferlhf")  # what the table shows beside the name (wrapped to the terminal)
    assert "is_response_0_safe" in pku.schema and pku.hub == "PKU-Alignment/PKU-SafeRLHF"
    assert pku.__doc__.startswith("Every unsafe response as a forget example")


@pytest.mark.parametrize("name", PAPER_RECIPES)
def test_recipe_runs_on_the_tiny_model(name, files, tmp_path):
    common = ["model.name=tiny-random-llama", "train.max_steps=2", "data.max_length=128", "data.mismatch.k=2"]
    if name == "copyright":  # the recipe's two commands: teach the book, then unlearn it
        r = cli("finetune", name, *common, *data_overrides(name, files), f"output_dir={tmp_path / 'taught'}")
        assert r.exit_code == 0, r.output
        common[0] = f"model.name={tmp_path / 'taught' / 'model'}"
    ref = "recipes/harmful.yaml" if name == "harmful" else name
    r = cli("run", ref, *common, *data_overrides(name, files), f"output_dir={tmp_path / 'run'}")
    assert r.exit_code == 0, r.output
    out = tmp_path / "run"
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["status"] == "done" and manifest["steps"] == 2
    shipped = load_config(FOLDER / f"{name}.yaml")
    assert load_config(out / "config.yaml").objective == shipped.objective
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(k in log[-1] for k in shipped.objective)

    # the recipe's eval section too (offline: the refusal judge, the normal set from a fixture file)
    extra = ["eval.limit=2", "eval.max_new_tokens=4"]
    if shipped.eval.judge:
        extra.append("eval.judge=refusal")
    if shipped.eval.normal is not None:
        extra.append(f"eval.normal.path={files['truthfulqa']}")
    r = cli("eval", ref, *common, *data_overrides(name, files), f"output_dir={out}", *extra)
    assert r.exit_code == 0, r.output
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(shipped.eval.sets) >= set(metrics["sets"]) and "forget" in metrics["sets"]
    if name == "hallucination":  # HaluEval's two answers reach the hallucination rate
        assert "hallucination_rate" in json.dumps(metrics["metrics"]["forget"])


def test_demo_recipes_run_on_the_tiny_model(tmp_path):
    """`unlearn demo`'s two recipes, as their opening comments run them (the built-in profiles data)."""
    common = ["model.name=tiny-random-llama", "train.max_steps=2"]
    r = cli("finetune", "demo_teach", *common, "model.merge=true", f"output_dir={tmp_path / 'taught'}")
    assert r.exit_code == 0, r.output
    taught = tmp_path / "taught" / "model"
    assert (taught / "config.json").exists()  # merged: a complete model, not an adapter
    run = ["demo", f"model.name={taught}", "train.max_steps=2", f"output_dir={tmp_path / 'run'}"]
    r = cli("run", *run)
    assert r.exit_code == 0, r.output
    assert load_config(tmp_path / "run" / "config.yaml").objective == {"ga": 0.5, "mismatch": 1.0, "kl": 3.0}
    r = cli("eval", *run, "eval.limit=3", "eval.max_new_tokens=4")
    assert r.exit_code == 0, r.output
    metrics = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert list(metrics["sets"]) == ["forget", "forget_test", "retain", "normal"]
    assert "leak_rate" in metrics["metrics"]["forget_test"] and "retain_accuracy" in metrics["metrics"]["retain"]


@pytest.mark.parametrize("preset", ["npo", "simnpo", "idk", "dpo", "rmu"])
def test_baseline_presets_run_through_the_train_loop(preset, tmp_path, data_files):
    """Full fine-tune: a frozen reference copy, the refusal rows, rmu's layer and parameter choice."""
    cfg = tiny_config(tmp_path, data_files, objective=preset, train={"max_steps": 2})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 0, r.output
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert manifest["status"] == "done" and len(log) == 2
    assert all(k in log[0] for k in load_config(tmp_path / "run" / "config.yaml").objective)
    if preset == "rmu":  # only layer 0's MLP of the 4-layer model trains: 3 matrices of 64 x 176
        assert manifest["trainable_parameters"] == 3 * 64 * 176


def test_refusals_come_from_the_config(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, objective={"idk": 1.0}, train={"max_steps": 1})
    cfg["data"]["refusals"] = []
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 2 and "data.refusals: must not be an empty list" in r.output
    assert not (tmp_path / "run").exists()
    r = cli("run", write_config(tmp_path / "c.yaml", cfg), "data.refusals=[No comment.]")
    assert r.exit_code == 0, r.output


def test_rmu_bad_layer_is_one_line_and_writes_nothing(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, objective={"rmu": {"weight": 1.0, "layer": 9}})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg))
    assert r.exit_code == 2 and "objective.rmu.layer: expected an integer in [0, 4)" in r.output
    assert not Path(tmp_path / "run").exists()


def test_the_hallucination_recipe_declares_its_right_answers_desired():
    """Its forget sets' target is the right answer: losing it is worse, and keep_best's default
    trade-off rewards keeping it (issue 14, item 2)."""
    cfg = load_config(find_recipe("hallucination"))
    assert cfg.eval.target_of("forget") == "desired" and cfg.eval.target_of("forget_test") == "desired"
    assert cfg.eval.trade_off["forget_leak_rate"] == 1.0
    harmful = load_config(find_recipe("harmful"))
    assert harmful.eval.target_of("forget") == "forbidden" and harmful.eval.trade_off["forget_leak_rate"] == -1.0
