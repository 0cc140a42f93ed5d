"""A model folder or config must never be a trap: no code runs from a config or a model unless the
config says so, no pickle is loaded unless allowed, and a run writes (and deletes) only inside
its output_dir."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import tiny_config, write_config
from unlearn.cli import app
from unlearn.config import ModelConfig, load_config
from unlearn.errors import UnlearnError
from unlearn.models import load_model

SRC = Path(__file__).resolve().parents[1] / "src" / "unlearn"


def cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_yaml_tags_that_run_code_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "c.yaml").write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\noutput_dir: o\n")
    with pytest.raises(UnlearnError, match="YAML syntax error: could not determine a constructor"):
        load_config(tmp_path / "c.yaml")
    assert not marker.exists()


def test_no_pickle_eval_or_exec_in_the_package():
    """The package reads weights and checkpoints with safetensors and configs with safe_load only."""
    pattern = re.compile(r"\btorch\.load\(|import (c?pickle|dill|marshal)\b|pickle\.loads?\(|(?<![.\w])eval\(|(?<![.\w])exec\(|yaml\.load\(|"
                         r"yaml\.unsafe_load|yaml\.Loader\b|FullLoader|UnsafeLoader")
    hits = [f"{p.relative_to(SRC)}:{i}: {line.strip()}"
            for p in SRC.rglob("*.py") for i, line in enumerate(p.read_text().splitlines(), 1)
            if pattern.search(line) and not line.lstrip().startswith("#")]
    assert hits == []


def test_remote_code_is_off_and_the_error_says_how_to_turn_it_on(tmp_path, tiny):
    model, tok = tiny
    folder = tmp_path / "custom"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="my_custom_llm", auto_map={"AutoConfig": "configuration_x.XConfig",
                                                        "AutoModelForCausalLM": "modeling_x.XForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    marker = tmp_path / "ran"
    (folder / "configuration_x.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (folder / "modeling_x.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    with pytest.raises(UnlearnError, match=r"needs its own code to run; set model.trust_remote_code: true only if"):
        load_model(ModelConfig(name=str(folder)))
    assert not marker.exists()


def test_a_pickle_only_adapter_is_refused(tmp_path, tiny):
    from peft import LoraConfig, get_peft_model

    model, tok = tiny
    import copy

    peft_model = get_peft_model(copy.deepcopy(model), LoraConfig(r=2, target_modules=["q_proj"]))
    folder = tmp_path / "adapter"
    peft_model.save_pretrained(folder)
    state = json.loads((folder / "adapter_config.json").read_text())
    state["base_model_name_or_path"] = "tiny-random-llama"
    (folder / "adapter_config.json").write_text(json.dumps(state))
    from safetensors.torch import load_file

    weights = load_file(folder / "adapter_model.safetensors")
    (folder / "adapter_model.safetensors").unlink()
    torch.save(weights, folder / "adapter_model.bin")
    with pytest.raises(UnlearnError, match=r"adapter has only pickle-based weights .* model.allow_pickle: true"):
        load_model(ModelConfig(name=str(folder)))


def test_checkpoints_hold_only_safetensors_and_json(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, train={"max_steps": 2, "save_every": 1})
    assert cli("run", write_config(tmp_path / "c.yaml", cfg)).exit_code == 0
    (ckpt,) = (tmp_path / "run" / "checkpoints").iterdir()
    assert sorted(p.name for p in ckpt.iterdir()) == [
        "optimizer.safetensors", "rng.safetensors", "state.json", "trainable.safetensors"]
    state = json.loads((ckpt / "state.json").read_text())
    assert state["step"] == 1 and state["data"] == {"seed": 0, "global_batch": 2, "grad_accum": 1,
                                                    "micro_batch_index": 1}


def test_a_symlink_in_output_dir_cannot_redirect_writes(tmp_path, data_files):
    cfg = tiny_config(tmp_path, data_files, train={"max_steps": 2, "save_every": 1})
    path = write_config(tmp_path / "c.yaml", cfg)
    assert cli("run", path).exit_code == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("keep")
    out = tmp_path / "run"
    import shutil

    shutil.rmtree(out / "checkpoints")
    (out / "checkpoints").symlink_to(elsewhere)
    r = cli("run", path, "--resume")
    assert r.exit_code == 2, r.output
    assert "outside output_dir" in r.output and "refusing to write there" in r.output
    assert sorted(p.name for p in elsewhere.iterdir()) == ["keep.txt"]


def test_overwrite_never_deletes_the_runs_own_inputs_or_the_working_directory(tmp_path, data_files, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    data = out / "forget.jsonl"
    data.write_text(data_files["forget"].read_text())
    cfg = tiny_config(tmp_path, {**data_files, "forget": data})
    r = cli("run", write_config(tmp_path / "c.yaml", cfg), "--overwrite")
    assert r.exit_code == 2 and "an input of this run inside output_dir" in r.output, r.output
    assert data.exists()

    monkeypatch.chdir(out)
    cfg = tiny_config(tmp_path, data_files, output_dir=str(tmp_path))
    r = cli("run", write_config(tmp_path / "c2.yaml", cfg), "--overwrite")
    assert r.exit_code == 2 and "holds the working directory" in r.output, r.output
    assert data.exists()
