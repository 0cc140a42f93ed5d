"""The paper's objective and two baselines on the real bundled model: 12 LoRA steps each on the
quickstart data, then the forget and retain responses' NLL under the saved model.
Minutes on a CPU: `make test-slow`, not CI.

Measured on the 2-core machine (12 steps, lr 5e-4, LoRA r 8; NLL in nats per token, original ->
unlearned): paper forget 2.61 -> 3.19, retain 1.06 -> 1.09; ga forget -> 8.09, retain -> 7.15 (gradient
ascent alone wrecks everything, as the paper reports); npo (+kl) forget -> 6.19, retain -> 3.79.

Each bound is that measurement with a stated margin, so that a change which halves the effect fails
while the drift of another CPU's kernels or thread count (last digits of 12 steps) passes.
"""

import io
import json
import math

import pytest
from rich.console import Console

from unlearn import load_config, run
from unlearn.config import ModelConfig
from unlearn.data import Encoder, encode_examples, load_examples
from unlearn.evaluate.nll import mean_response_nll
from unlearn.models import load_model

pytestmark = pytest.mark.slow

STEPS = 12


@pytest.fixture(scope="module")
def before():
    """Tokenizer, encoded forget and retain sets, and the original model's NLL on each."""
    model, tok = load_model(ModelConfig(name="smollm2-135m"))
    enc = Encoder(tok, "qa", 128)
    forget = encode_examples(enc, load_examples("examples/forget.jsonl"))
    retain = encode_examples(enc, load_examples("examples/retain.jsonl"))
    nll = {k: mean_response_nll(model, v, tok.pad_token_id) for k, v in (("forget", forget), ("retain", retain))}
    return tok, {"forget": forget, "retain": retain}, nll


def unlearn(preset, tmp_path, before):
    """NLL rise on the forget and retain sets after STEPS steps of `preset`."""
    tok, sets, nll0 = before
    cfg = load_config(
        "examples/quickstart.yaml",
        [f"objective={preset}", f"train.max_steps={STEPS}", f"output_dir={tmp_path / preset}"],
    )
    result = run(cfg, console=Console(file=io.StringIO()))
    log = [json.loads(line) for line in (result.output_dir / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == STEPS and all(math.isfinite(rec["loss"]) for rec in log)
    model, _ = load_model(ModelConfig(name=str(result.model_dir)))
    nll1 = {k: mean_response_nll(model, v, tok.pad_token_id) for k, v in sets.items()}
    print(f"{preset}: forget NLL {nll0['forget']:.3f} -> {nll1['forget']:.3f}, retain NLL "
          f"{nll0['retain']:.3f} -> {nll1['retain']:.3f}, {result.seconds / STEPS:.2f} s/step")
    return {k: nll1[k] - nll0[k] for k in nll0}


def test_paper_forgets_and_keeps_the_retain_set(tmp_path, before):
    rise = unlearn("paper", tmp_path, before)
    # measured: forget +0.58, retain +0.03 nats; margin 0.12 below the forget rise (about 20 %) and
    # 0.07 around the retain one
    assert rise["forget"] >= 0.58 - 0.12, rise
    assert abs(rise["retain"]) <= 0.03 + 0.07, rise


def test_ga_forgets_without_regard_for_the_retain_set(tmp_path, before):
    rise = unlearn("ga", tmp_path, before)
    assert rise["forget"] >= 2.0, rise  # the retain NLL rises about as much: no assertion on it


def test_npo_forgets_more_than_it_damages(tmp_path, before):
    rise = unlearn("npo", tmp_path, before)
    assert rise["forget"] >= 1.0 and rise["forget"] - rise["retain"] >= 0.3, rise
