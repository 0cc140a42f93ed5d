from pathlib import Path

from unlearn.config import describe_keys

ROOT = Path(__file__).resolve().parents[1]


def test_readme_documents_every_config_key():
    readme = (ROOT / "README.md").read_text()
    missing = [k for k, *_ in describe_keys() if f"`{k}`" not in readme]
    assert not missing, f"README lacks {missing}: paste `unlearn config --keys --markdown`"


def test_readme_shows_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def test_the_worked_example_of_docs_architecture_runs(tmp_path, data_files, plugin_module):
    """The term that docs/architecture.md adds, taken from the page as written, trains on the tiny
    model when its module is named in `imports`; its parameter is checked like any config key."""
    import json
    import re

    from typer.testing import CliRunner

    from conftest import tiny_config, write_config
    from unlearn.cli import app

    page = (ROOT / "docs" / "architecture.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", page, re.S) if "register_term" in c)
    plugin_module("docs_wga_example", code)
    cfg = tiny_config(tmp_path, data_files, objective={"wga_example": 1.0, "kl": 1.0},
                      imports=["docs_wga_example"], train={"max_steps": 2})
    path = write_config(tmp_path / "c.yaml", cfg)
    r = CliRunner().invoke(app, ["run", str(path), "objective.wga_example.temperature=2"])
    assert r.exit_code == 0, r.output
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all("wga_example" in rec for rec in log)
    r = CliRunner().invoke(app, ["run", str(path), "objective.wga_example.temperature=0", "--overwrite"])
    assert r.exit_code == 2 and "objective.wga_example.temperature: must be > 0, got 0" in r.output, r.output


def test_docs_audit_names_every_attack_and_rewrite():
    """docs/audit.md's two tables: one row per registered attack and per jailbreak rewrite, so a new
    one cannot ship undocumented."""
    import re

    from unlearn.auditing.registry import available_attacks
    from unlearn.auditing.rewrites import rewrites

    page = (ROOT / "docs" / "audit.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_]+)` \|", page, re.M))
    assert set(available_attacks()) <= rows, set(available_attacks()) - rows
    assert set(rewrites()) <= rows, set(rewrites()) - rows
    assert "MEASURED" not in page and "AUDIT_README" not in (ROOT / "README.md").read_text()
