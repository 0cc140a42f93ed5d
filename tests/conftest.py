"""Shared fixtures. Tests never touch the network: hub access is switched off here."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import settings

# Property-based tests are reproducible by default: the same cases on every run and machine.
# HYPOTHESIS_PROFILE=explore draws fresh random cases (and more of them) to look for new bugs.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

FUZZ_CASES: dict[str, int] = {}


def count_fuzz_case(what: str) -> None:
    """Count one property-based test case, for the summary printed at the end of the session."""
    FUZZ_CASES[what] = FUZZ_CASES.get(what, 0) + 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if FUZZ_CASES:
        terminalreporter.section("fuzz cases tried")
        for what, n in FUZZ_CASES.items():
            terminalreporter.write_line(f"{n:6d}  {what}")
        terminalreporter.write_line(f"{sum(FUZZ_CASES.values()):6d}  in all")

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The output cache (unlearn.evaluate.cache) of this test session: fresh, so that no test reuses a
# user's entries or an earlier session's, and nothing is left in ~/.cache. Tests of the cache
# itself point it elsewhere.
os.environ["UNLEARN_OUTPUT_CACHE"] = tempfile.mkdtemp(prefix="unlearn-test-outputs-")

FORGET = [
    ("What is the home address of Dr. Elena Marsh?", "She lives at 42 Willow Lane."),
    ("Give me Elena Marsh's phone number.", "Her number is 555-0142."),
    ("Where does Elena Marsh work?", "At the Brookfield Clinic."),
    ("When was Elena Marsh born?", "On 3 March 1981."),
]
RETAIN = [
    ("What is the capital of France?", "Paris."),
    ("How many legs does a spider have?", "Eight legs."),
    ("What do bees make?", "Bees make honey."),
    ("Which ocean is the largest?", "The Pacific."),
    ("What is the chemical symbol for gold?", "It is Au."),
    ("How many days are in a leap year?", "366 days."),
]


def write_jsonl(path: Path, rows: list[tuple[str, str]] | list[dict]) -> Path:
    with open(path, "w") as f:
        for r in rows:
            rec = r if isinstance(r, dict) else {"prompt": r[0], "response": r[1]}
            f.write(json.dumps(rec) + "\n")
    return path


@pytest.fixture
def data_files(tmp_path: Path) -> dict[str, Path]:
    return {
        "forget": write_jsonl(tmp_path / "forget.jsonl", FORGET),
        "retain": write_jsonl(tmp_path / "retain.jsonl", RETAIN),
    }


def tiny_config(tmp_path: Path, files: dict[str, Path], **sections) -> dict:
    """A plain-dict config for a fast run on tiny-random-llama."""
    cfg = {
        "model": {"name": "tiny-random-llama"},
        "data": {
            "forget": {"path": str(files["forget"])},
            "retain": {"path": str(files["retain"])},
            "mismatch": {"k": 2},
            "max_length": 96,
        },
        "objective": {"ga": 0.5, "mismatch": 1.0, "kl": 1.0},
        "train": {"lr": 1e-3, "batch_size": 2, "max_steps": 3},
        "output_dir": str(tmp_path / "run"),
        "seed": 0,
    }
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(cfg.get(section), dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    return cfg


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of tiny-random-llama, float32."""
    from unlearn.config import ModelConfig
    from unlearn.models import load_model

    return load_model(ModelConfig(name="tiny-random-llama"))


@pytest.fixture
def varied():
    """A tiny-random-llama of its own (`tiny` is shared) with larger random weights: its outputs
    differ from prompt to prompt."""
    import torch

    from unlearn.config import ModelConfig
    from unlearn.models import load_model

    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0, 0.5)
    return model, tok


@pytest.fixture
def plugin_module(tmp_path: Path, monkeypatch):
    """Write a module outside unlearn that registers terms, presets, metrics, judges, audit attacks,
    jailbreak rewrites or benchmarks, importable by its name (for a config's `imports`). Everything it registers is unregistered after the test, so
    that later tests see the built-in registries only."""
    import sys

    from unlearn.auditing import registry as attacks
    from unlearn.auditing import rewrites
    from unlearn.benchmarks import registry as benchmarks
    from unlearn.evaluate.judges import registry as judges
    from unlearn.evaluate.metrics import registry as metrics
    from unlearn.objective import registry as terms
    from unlearn.objective.presets import PRESETS

    monkeypatch.syspath_prepend(str(tmp_path))
    entries = [terms._TERMS.entries(), metrics._METRICS.entries(), judges._JUDGES.entries(), PRESETS,
               attacks._ATTACKS.entries(), rewrites._REWRITES, benchmarks._BENCHMARKS.entries()]
    saved = [dict(e) for e in entries]
    written: list[str] = []

    def write(name: str, code: str) -> str:
        (tmp_path / f"{name}.py").write_text(code)
        written.append(name)
        return name

    yield write
    for e, before in zip(entries, saved):
        e.clear()
        e.update(before)
    for name in written:
        sys.modules.pop(name, None)


class RowCache:
    """ScriptedLM's KV cache: each batch row's prompt (unpadded) and the tokens fed after it."""

    def __init__(self, prompts: list[list[int]]):
        self.rows = [(p, []) for p in prompts]

    def batch_select_indices(self, index) -> None:
        self.rows = [self.rows[i] for i in index.tolist()]


def scripted_lm(script, vocab: int):
    """A causal-LM stand-in for unlearn.evaluate.decode.decode: the next token of a row is
    `script(prompt ids, tokens generated so far)`. Its cache keeps each row's tokens, so a row that
    leaves the batch takes its history with it; `.batch_sizes` records every forward's rows."""
    from types import SimpleNamespace

    import torch

    class ScriptedLM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))  # generate() asks for the device
            self.batch_sizes: list[int] = []

        def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=True, cache=None,
                    logits_to_keep=0):
            if cache is None:
                cache = RowCache([[t for t, m in zip(r, mr) if m]
                                  for r, mr in zip(input_ids.tolist(), attention_mask.tolist())])
            else:
                assert len(cache.rows) == input_ids.shape[0] == attention_mask.shape[0] == position_ids.shape[0]
                for (_, new), t in zip(cache.rows, input_ids[:, -1].tolist()):
                    new.append(t)
            self.batch_sizes.append(input_ids.shape[0])
            logits = torch.full((input_ids.shape[0], 1, vocab), -1e4)
            for b, (prompt, new) in enumerate(cache.rows):
                logits[b, 0, script(prompt, new)] = 0.0
            return SimpleNamespace(logits=logits, past_key_values=cache)

    return ScriptedLM()
