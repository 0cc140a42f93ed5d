"""Unlearning on the real bundled model. Minutes on a CPU: `make test-slow`, not CI."""

import io

import pytest
from rich.console import Console

from unlearn import load_config, run
from unlearn.config import ModelConfig
from unlearn.data import Encoder, encode_examples, load_examples
from unlearn.evaluate.nll import mean_response_nll
from unlearn.models import load_model

pytestmark = pytest.mark.slow


def test_smollm2_lora_unlearns_forget_and_keeps_retain(tmp_path):
    cfg = load_config("examples/quickstart.yaml", [f"output_dir={tmp_path / 'run'}"])
    result = run(cfg, console=Console(file=io.StringIO()))
    original, tok = load_model(ModelConfig(name="smollm2-135m"))
    unlearned, _ = load_model(ModelConfig(name=str(result.model_dir)))
    enc = Encoder(tok, "qa", 128)
    forget = encode_examples(enc, load_examples("examples/forget.jsonl"))
    retain = encode_examples(enc, load_examples("examples/retain.jsonl"))
    f0, f1 = (mean_response_nll(m, forget, tok.pad_token_id) for m in (original, unlearned))
    r0, r1 = (mean_response_nll(m, retain, tok.pad_token_id) for m in (original, unlearned))
    print(f"forget NLL {f0:.3f} -> {f1:.3f}; retain NLL {r0:.3f} -> {r1:.3f}; {result.seconds / result.steps:.2f} s/step")
    assert f1 - f0 >= 2.0
    assert abs(r1 - r0) < 0.3
