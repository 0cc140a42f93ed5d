"""`unlearn compare`: one table for several methods on the same data, steps, seed and evaluation.

One real comparison on tiny-random-llama (LoRA on q_proj/v_proj) runs once for the module: `paper`
and `ga` finish; `rmu` fails for real (its default modules, the MLPs, are not adapted), and must be
reported without stopping the others. Each method runs in its own process; the processes get one
torch thread here (two threads on this shared two-core machine make a tiny forward ~60x slower).
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import FORGET, RETAIN, tiny_config, write_config, write_jsonl
from unlearn.cli import app
from unlearn.comparison import method_config, method_objective, parse_methods, read_result
from unlearn.report.compare_report import render_html, render_markdown, table_rows
from unlearn.report.write import COMPARE_FILES as FILES
from unlearn.config import config_from_dict
from unlearn.errors import UnlearnError

runner = CliRunner()
LORA_QV = {"name": "tiny-random-llama", "lora": {"r": 4, "target_modules": ["q_proj", "v_proj"]}}


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_error_line(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def make_config(tmp: Path, **sections) -> Path:
    files = {"forget": write_jsonl(tmp / "forget.jsonl", FORGET), "retain": write_jsonl(tmp / "retain.jsonl", RETAIN)}
    sections["eval"] = {"max_new_tokens": 4, **sections.get("eval", {})}
    cfg = tiny_config(tmp, files, model=LORA_QV, **sections)
    return write_config(tmp / "cfg.yaml", cfg)


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    path = make_config(tmp)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setattr(tempfile, "tempdir", str(tmp))  # where the job files go while it runs
        result = cli("compare", path, "--methods", "paper,ga,rmu")
    folder = tmp / "run" / "compare"
    return tmp, path, folder, result


def test_compare_writes_a_row_per_method_and_reports_the_failed_one(compared):
    tmp, _, folder, result = compared
    assert result.exit_code == 1, result.output  # written, but one method failed: a script can tell
    assert "1 of 3 methods failed" in result.output
    assert {p.name for p in folder.iterdir()} >= set(FILES)
    assert not list(tmp.glob("unlearn-compare-*")), "the job files are removed"
    data = json.loads((folder / "compare.json").read_text())
    assert data["methods"] == ["paper", "ga", "rmu"] and list(data["runs"]) == ["paper", "ga", "rmu"]
    for m in ("paper", "ga"):
        r = data["runs"][m]
        assert r["status"] == "done" and r["steps"] == 3 and r["stop_reason"] == "max_steps"
        assert r["reused_original"] is True  # the original model generated once, for all methods
        assert r["train_seconds"] > 0 and r["eval_seconds"] > 0
        assert r["train_peak_bytes"] > 10 * 2**20 and r["eval_peak_bytes"] > 10 * 2**20
        assert (folder / "runs" / m / "eval" / "report.html").exists()
    assert data["runs"]["paper"]["objective"] == {"ga": 0.5, "mismatch": 1.0, "kl": 1.0}
    assert data["runs"]["ga"]["objective"] == {"ga": 1.0}
    rmu = data["runs"]["rmu"]
    assert rmu["status"] == "failed" and rmu["failed_phase"] == "train"
    assert "objective.rmu" in rmu["error"] and "\n" not in rmu["error"] and rmu["metrics"] == {}
    assert "rmu failed" in result.output  # said on the terminal too

    md = (folder / "compare.md").read_text()
    header = next(ln for ln in md.splitlines() if ln.startswith("| method |"))
    from unlearn.evaluate.metrics.registry import get_metric

    for role, ms in data["metrics"].items():
        for name in ms:  # every metric is a column but the registry's details (compare.json has them)
            assert (f"{role} {name} " in header) != get_metric(name).detail, (role, name)
    rows = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln}
    assert set(rows) == {"method", "original model", "paper", "ga", "rmu"}
    assert "failed (train)" in rows["rmu"] and "objective.rmu" in rows["rmu"]
    n_cols = header.count("|")
    assert all(row.count("|") - row.count("\\|") == n_cols for row in rows.values())


def test_compare_numbers_are_each_runs_own_metrics(compared):
    _, _, folder, _ = compared
    data = json.loads((folder / "compare.json").read_text())
    checked = 0
    for m in ("paper", "ga"):
        own = json.loads((folder / "runs" / m / "eval" / "metrics.json").read_text())["metrics"]
        assert data["runs"][m]["metrics"] == {r: {n: row["unlearned"] for n, row in ms.items()} for r, ms in own.items()}
        for role, ms in own.items():  # the original's row: the same values each run's report shows
            for name, row in ms.items():
                if row["original"] is not None:
                    assert data["original"]["metrics"][role][name] == row["original"], (m, role, name)
                    checked += 1
    assert checked >= 20
    assert data["axes"] == {"x": "forget.leak_rate", "y": "retain.retain_accuracy"}


def test_plot_is_a_png_embedded_in_a_self_contained_html(compared):
    _, _, folder, _ = compared
    blob = (folder / "tradeoff.png").read_bytes()
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(folder / "tradeoff.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200
    html = (folder / "compare.html").read_text()
    assert html.count("data:image/png;base64,") == 1
    assert not re.search(r"(src|href)=['\"]https?:", html)
    assert "href='runs/paper/eval/report.html'" in html and "runs/rmu/eval" not in html


def test_existing_comparison_needs_overwrite(compared):
    _, path, folder, _ = compared
    before = (folder / "compare.json").stat().st_mtime_ns
    one_error_line(cli("compare", path, "--methods", "ga"), "--overwrite", str(folder))
    assert (folder / "compare.json").stat().st_mtime_ns == before


def test_unknown_method_fails_before_anything_is_written(tmp_path):
    path = make_config(tmp_path)
    one_error_line(cli("compare", path, "--methods", "paper,gradient_ascent"), "gradient_ascent", "graddiff", "simnpo")
    assert not (tmp_path / "run").exists()


def test_bad_term_parameter_fails_before_anything_is_written(tmp_path):
    path = make_config(tmp_path, objective={"simnpo": {"weight": 1.0, "delta": "big"}})
    one_error_line(cli("compare", path, "--methods", "ga,simnpo"), "objective.simnpo.delta")
    assert not (tmp_path / "run").exists()


def test_bad_eval_set_fails_up_front_in_the_original_models_process(tmp_path, monkeypatch):
    path = make_config(tmp_path, eval={"forget": {"path": str(tmp_path / "missing.jsonl")}})
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    result = cli("compare", path, "--methods", "ga")
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "missing.jsonl" in errors[0] and "Traceback" not in result.output
    assert result.output.rstrip().splitlines()[-1] == errors[0]
    assert not (tmp_path / "run").exists()
    assert not list(tmp_path.glob("unlearn-compare-*"))


# --------------------------------------------------------------------------------------------
# Pieces, without a model


def test_parse_methods():
    assert parse_methods(" paper, ga ,npo") == ["paper", "ga", "npo"]
    assert parse_methods(["paper", "ga,idk"]) == ["paper", "ga", "idk"]
    for bad, frag in (("paper,,ga", "comma-separated"), ("ga,ga", "more than once"), ("", "comma-separated"),
                      ("ga,foo,bar", "foo, bar")):
        with pytest.raises(UnlearnError, match=re.escape(frag)):
            parse_methods(bad)


def test_method_config_takes_the_presets_weights_and_the_configs_term_parameters(tmp_path, data_files):
    cfg = config_from_dict(tiny_config(tmp_path, data_files, objective={"simnpo": {"weight": 3.0, "delta": 2.5}, "kl": 2}))
    assert method_objective(cfg, "simnpo") == {"simnpo": {"weight": 1.0, "delta": 2.5}, "nll": 1.0}
    assert method_objective(cfg, "npo") == {"npo": 1.0, "kl": 1.0}
    c = method_config(cfg, "paper", tmp_path / "x" / "runs" / "paper")
    assert c.objective == {"ga": 0.5, "mismatch": 1.0, "kl": 1.0}
    assert c.output_dir == str(tmp_path / "x" / "runs" / "paper")
    assert c.train.max_steps == cfg.train.max_steps and c.seed == cfg.seed and c.data == cfg.data
    assert c.origin("objective.ga") == "--methods paper"


def test_a_process_that_dies_without_a_result_is_a_failure(tmp_path):
    r = read_result(tmp_path / "none.json", -9, tmp_path / "m.log")
    assert r["status"] == "failed" and "SIGKILL" in r["error"] and "out of memory" in r["error"]
    assert "exited with status 3" in read_result(tmp_path / "none.json", 3, tmp_path / "m.log")["error"]
    (tmp_path / "r.json").write_text(json.dumps({"status": "done", "steps": 2}))
    assert read_result(tmp_path / "r.json", 0, tmp_path / "m.log") == {"status": "done", "steps": 2}


def _data():
    info = {"forget": {"leak_rate": {"unit": "fraction", "higher_is_better": False, "description": "leaks"}},
            "retain": {"retain_accuracy": {"unit": "fraction", "higher_is_better": True, "description": "kept"},
                       "nll": {"unit": "nats", "higher_is_better": False, "description": "nll"}}}

    def run(leak, acc, nll, status="done", **kw):
        metrics = {"forget": {"leak_rate": leak}, "retain": {"retain_accuracy": acc, "nll": nll}} if status == "done" else {}
        return {"status": status, "objective": {"ga": 1.0}, "output_dir": "/r/compare/runs/x", "report": "/r/compare/runs/x/eval/report.html",
                "log": "/r/compare/logs/x.log", "steps": 30, "stop_reason": "max_steps", "train_seconds": 12.34,
                "eval_seconds": 5.0, "train_peak_bytes": 300 * 2**20, "eval_peak_bytes": 250 * 2**20, "metrics": metrics, **kw}

    return {
        "unlearn_version": "t", "config": "c.yaml", "output_dir": "/r", "folder": "/r/compare", "model": "tiny",
        "lora": False, "max_steps": 30, "seed": 0, "methods": ["paper", "ga", "npo"], "memory": "peak_rss",
        "axes": {"x": "forget.leak_rate", "y": "retain.retain_accuracy"},
        "sets": {"forget": {"n": 4, "source": "f.jsonl"}, "retain": {"n": 6, "source": "r.jsonl"}},
        "metrics": info,
        "original": {"metrics": {"forget": {"leak_rate": 1.0}, "retain": {"retain_accuracy": 1.0, "nll": 0.5}},
                     "eval_seconds": 3.0, "peak_bytes": 200 * 2**20},
        "runs": {"paper": run(0.25, 0.5, 1.25), "ga": run(0.0, 0.5, 2.0),
                 "npo": run(None, None, None, status="failed", failed_phase="train", error="stopped: non-finite npo at step 2",
                            steps=2, train_peak_bytes=None)},
    }


def test_table_marks_the_best_method_per_column_and_shows_failures():
    rows = table_rows(_data())
    assert [r["method"] for r in rows] == ["original model", "paper", "ga", "npo"]
    assert rows[0]["values"] == ["100.0%", "100.0%", "0.500"] and rows[0]["best"] == [False] * 3
    # leak: ga's 0 % is best (lower); accuracy: a tie between the only two values, so no best; nll: paper's
    assert rows[1]["values"] == ["25.0%", "50.0%", "1.250"] and rows[1]["best"] == [False, False, True]
    assert rows[2]["best"] == [True, False, False]
    assert rows[3]["status"] == "failed (train)" and rows[3]["values"] == ["–"] * 3 and rows[3]["peak_mb"] == "– / 250"
    md = render_markdown(_data())
    assert "| ga | ga 1 | done | 30 | max_steps | 12.3 | 5.0 | 300 / 250 | **0.0%** | 50.0% | 2.000 |  |" in md
    assert "| npo | ga 1 | failed (train) | 2 |" in md and "stopped: non-finite npo at step 2 |" in md
    html = render_html(_data(), b"\x89PNG fake")
    assert "<tr class='failed'><td>npo</td><td>ga 1</td><td>failed (train)</td><td class='err'>stopped: non-finite" in html
    assert "<a href='runs/x/eval/report.html'>paper</a>" in html
    assert html.count("<td class='num best'>") == 2


def test_terms_registered_outside_unlearn_are_imported_by_the_method_process(tmp_path, data_files, monkeypatch):
    import dataclasses

    from unlearn.comparison.methods import term_modules
    from unlearn.objective.presets import PRESETS
    from unlearn.objective import registry

    cfg = config_from_dict(tiny_config(tmp_path, data_files))
    monkeypatch.setitem(PRESETS, "mine", {"mine": 1.0, "kl": 1.0})
    mine = registry.get_term("ga")
    for module, expected in (("my_terms.loss", ["my_terms.loss"]), ("__main__", None)):
        fn = lambda ctx: None  # noqa: E731
        fn.__module__ = module
        monkeypatch.setitem(registry._TERMS.entries(), "mine", dataclasses.replace(mine, name="mine", fn=fn))
        c = method_config(cfg, "mine", tmp_path / "runs" / "mine")
        if expected is None:
            with pytest.raises(UnlearnError, match="registered in __main__"):
                term_modules(c, "mine")
        else:
            assert term_modules(c, "mine") == expected


def test_compare_audit_adds_the_worst_recovered_column(tmp_path):
    """--audit: each method's evaluation runs the attacks; compare's table gains their headline and
    the plot an arrow from each method's leak rate to its worst under attack (drawn from these values)."""
    path = make_config(tmp_path, audit={"attacks": ["template", "quantize"], "quant_bits": [4], "retain_limit": 2})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setattr(tempfile, "tempdir", str(tmp_path))
        result = cli("compare", path, "--methods", "paper,ga", "--audit")
    assert result.exit_code == 0, result.output
    folder = tmp_path / "run" / "compare"
    data = json.loads((folder / "compare.json").read_text())
    assert data["audit"] is True
    assert data["metrics"]["audit"]["worst_recovered"]["higher_is_better"] is False
    for m in ("paper", "ga"):
        run = data["runs"][m]
        audit = json.loads((Path(run["output_dir"]) / "audit" / "audit.json").read_text())
        assert run["metrics"]["audit"]["worst_recovered"] == audit["headline"][0]["value"]
        assert [r["variant"] for r in audit["attacks"]] == ["template:chat", "4-bit"]
        assert "Is it really gone?" in (Path(run["output_dir"]) / "eval" / "report.md").read_text()
    md = (folder / "compare.md").read_text()
    assert "audit worst_recovered ↓" in md


def test_compare_audit_checks_attack_names_before_anything_runs(tmp_path):
    path = make_config(tmp_path, audit={"attacks": ["nonsense"]})
    one_error_line(cli("compare", path, "--methods", "paper", "--audit"), "audit.attacks", "'nonsense'")
    assert not (tmp_path / "run").exists()


def test_presets_registered_by_term_modules_are_methods_in_a_fresh_process():
    """A preset that a term module registers (undial, pdu, ...) is a method of `unlearn compare`
    before anything has imported the term modules (the CLI checks --methods first)."""
    import subprocess
    import sys

    code = ("from unlearn.comparison import parse_methods; "
            "print(parse_methods('paper,undial,satimp,wga,ceu,pdu'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['paper', 'undial', 'satimp', 'wga', 'ceu', 'pdu']"
