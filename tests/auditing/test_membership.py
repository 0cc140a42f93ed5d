"""Membership inference: scores and AUC on hand-worked numbers, the same numbers as open-unlearning's
definitions, token statistics against the full softmax, and the issue's check: strings a tiny model
memorised are told from random ones (AUC near 1), and not before training (AUC near 0.5)."""

from __future__ import annotations

import math
import random
import zlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from unlearn.auditing.membership import ATTACKS, TokenStats, auc, membership, mia_scores, token_stats
from unlearn.config import ModelConfig
from unlearn.data.batch import collate
from unlearn.data.encode import Encoded, Encoder
from unlearn.errors import UnlearnError
from unlearn.models import load_model, response_logits

# ---- AUC ------------------------------------------------------------------------------------


def test_auc_hand_worked():
    assert auc([3, 2], [1, 0]) == 1.0
    assert auc([1, 0], [3, 2]) == 0.0
    assert auc([1, 1], [1, 1]) == 0.5  # all tied: each pair counts 1/2
    # Pairs (member, non-member): 3>2, 3>0, 1<2, 1>0 -> 3 wins of 4.
    assert auc([3, 1], [2, 0]) == 0.75
    # 2 vs (2, 1): a tie (1/2) and a win (1); 0 vs (2, 1): two losses -> 1.5 / 4.
    assert auc([2, 0], [2, 1]) == 0.375
    assert auc([5], [1, 2, 3]) == 1.0


def test_auc_equals_the_pairwise_definition():
    rng = random.Random(3)
    for _ in range(50):
        m = [rng.choice([0, 1, 2, 2.5, 3]) for _ in range(rng.randint(1, 9))]
        n = [rng.choice([0, 1, 2, 2.5, 3]) for _ in range(rng.randint(1, 9))]
        pairwise = sum((a > b) + 0.5 * (a == b) for a in m for b in n) / (len(m) * len(n))
        assert auc(m, n) == pytest.approx(pairwise, abs=1e-12)


def test_auc_bad_input():
    with pytest.raises(ValueError, match="both sides"):
        auc([], [1.0])
    with pytest.raises(ValueError, match="both sides"):
        auc([1.0], [])
    with pytest.raises(ValueError, match="NaN"):
        auc([float("nan")], [1.0])


# ---- scores on hand-made statistics -------------------------------------------------------------

HAND = TokenStats(
    logprobs=[-1.0, -3.0, -2.0, -0.5, -4.0, -0.1],
    mu=[-2.0, -2.0, -1.0, -1.0, -2.0, 0.0],
    sigma=[1.0, 2.0, 1.0, 0.5, 4.0, 1.0],
)


def test_scores_hand_worked():
    s = mia_scores([HAND], ["abc"], k=0.4)
    # loss: mean of all six log-probs = -10.6 / 6.
    assert s["loss"] == [pytest.approx(-10.6 / 6)]
    # zlib: that over len(zlib.compress(b"abc")) = 11 bytes.
    assert len(zlib.compress(b"abc")) == 11
    assert s["zlib"] == [pytest.approx(-10.6 / 6 / 11)]
    # min_k: the last token (EOS) is left out -> [-1, -3, -2, -0.5, -4]; int(5 * 0.4) = 2 lowest:
    # -4 and -3 -> -3.5.
    assert s["min_k"] == [pytest.approx(-3.5)]
    # min_k++: (lp - mu) / sigma = [1, -0.5, -1, 1, -0.5] (and -0.1 for the EOS, left out);
    # 2 lowest: -1 and -0.5 -> -0.75. Not the same tokens as min_k: token 4 (lp -4) was expected.
    assert s["min_k_plus_plus"] == [pytest.approx(-0.75)]


def test_k_bounds_and_one_token():
    # k = 1: every scored token; a tiny k: still one token (max(1, int(n * k))).
    assert mia_scores([HAND], ["abc"], k=1.0)["min_k"] == [pytest.approx(-10.5 / 5)]
    assert mia_scores([HAND], ["abc"], k=0.01)["min_k"] == [-4.0]
    # A one-token response keeps its token.
    one = TokenStats([-2.0], [-1.0], [0.5])
    s = mia_scores([one], ["x"], k=0.2)
    assert s["min_k"] == [-2.0] and s["min_k_plus_plus"] == [pytest.approx(-2.0)]


def test_min_k_plus_plus_variance_floor():
    # sigma 0 (a certain model): the variance is floored at 1e-6, sigma 1e-3, as open-unlearning.
    s = mia_scores([TokenStats([-1.0, -1.0], [-1.001, -1.001], [0.0, 0.0])], ["ab"], k=1.0)
    assert s["min_k_plus_plus"] == [pytest.approx(1.0, rel=1e-6)]


def test_higher_means_member():
    likely = TokenStats([-0.1] * 5, [-1.0] * 5, [1.0] * 5)
    unlikely = TokenStats([-3.0] * 5, [-1.0] * 5, [1.0] * 5)
    s = mia_scores([likely, unlikely], ["hello", "hello"])
    assert all(s[name][0] > s[name][1] for name in ATTACKS)


def test_scores_bad_input():
    with pytest.raises(UnlearnError, match="1 token statistics but 2 texts"):
        mia_scores([HAND], ["a", "b"])
    with pytest.raises(UnlearnError, match="k"):
        mia_scores([HAND], ["a"], k=0.0)
    with pytest.raises(UnlearnError, match="example 0"):
        mia_scores([TokenStats([], [], [])], ["a"])


# ---- against open-unlearning's definitions ------------------------------------------------------


class FixedLogits(nn.Module):
    """A 'model' whose logits at position t are table[t], whatever the input."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, input_ids, attention_mask=None, use_cache=False):
        b, t = input_ids.shape
        return SimpleNamespace(logits=self.table[:t].unsqueeze(0).expand(b, t, -1))


def open_unlearning_scores(logits: torch.Tensor, ids: list[int], n_prompt: int, text: str, k: float) -> dict:
    """open-unlearning's scores for one row (commit d3d7cf9), transcribed with numpy: avg_loss
    (evaluate_probability), ZLIBAttack, MinKProbAttack and MinKPlusPlusAttack over
    tokenwise_logprobs / tokenwise_vocab_logprobs (src/evals/metrics/utils.py, mia/*.py)."""
    labels = np.array([-100] * n_prompt + ids[n_prompt:])
    log_probs = torch.log_softmax(logits.double(), -1).numpy()[:-1]  # [T-1, V]
    shifted = labels[1:]
    nll = [-log_probs[t, y] for t, y in enumerate(shifted) if y != -100]
    avg_loss = sum(nll) / len(nll)
    actual = np.nonzero(labels != -100)[0][:-1]  # "-1 to ignore eos prediction"
    start, end = actual[0], actual[-1]
    vocab = log_probs[start - 1 : end]
    target = np.array([log_probs[t, ids[t + 1]] for t in range(start - 1, end)])
    num_k = max(1, int(len(target) * k))
    mu = (np.exp(vocab) * vocab).sum(-1)
    var = np.maximum((np.exp(vocab) * vocab**2).sum(-1) - mu**2, 1e-6)
    return {
        "loss": avg_loss,
        "zlib": avg_loss / len(zlib.compress(text.encode("utf-8"))),
        "min_k": -np.mean(np.sort(target)[:num_k]),
        "min_k_plus_plus": -np.mean(sorted((target - mu) / np.sqrt(var))[:num_k]),
    }


def test_same_numbers_as_open_unlearning():
    g = torch.Generator().manual_seed(7)
    vocab, length = 11, 12
    table = torch.randn(length, vocab, generator=g) * 3
    model = FixedLogits(table)
    rows = [Encoded([1, 4, 2, 7, 3, 9, 9, 0, 5, 2], 3), Encoded([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 6], 5)]
    texts = ["first answer", "the second one"]
    stats = token_stats(model, rows, pad_id=0, batch_size=2)
    ours = mia_scores(stats, texts, k=0.5)
    for i, (row, text) in enumerate(zip(rows, texts)):
        theirs = open_unlearning_scores(table[: len(row.ids)], row.ids, row.n_prompt, text, k=0.5)
        # Same numbers, the sign flipped: here higher = member, there higher = non-member.
        for name in ATTACKS:
            assert ours[name][i] == pytest.approx(-theirs[name], rel=1e-5, abs=1e-6), name


# ---- token statistics on the tiny model -------------------------------------------------------


def test_token_stats_match_the_full_softmax(tiny):
    model, tok = tiny
    enc = Encoder(tok, "qa", max_length=96)
    rows = enc.encode_many([("Who?", "Ada Lovelace."), ("Where is it kept, exactly?", "In the box."), ("Q", "yes")])
    model.train()  # its mode must come back
    stats = token_stats(model, rows, tok.pad_token_id, batch_size=2)
    assert model.training
    model.eval()
    assert [len(s.logprobs) for s in stats] == [len(r.ids) - r.n_prompt for r in rows]
    row = rows[1]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([row.ids])).logits[0].double(), -1)
    positions = range(row.n_prompt - 1, len(row.ids) - 1)  # each predicts the token after it
    lp = [logp[t, row.ids[t + 1]].item() for t in positions]
    mu = [(logp[t].exp() * logp[t]).sum().item() for t in positions]
    sigma = [math.sqrt((logp[t].exp() * logp[t] ** 2).sum().item() - m**2) for t, m in zip(positions, mu)]
    assert stats[1].logprobs == pytest.approx(lp, abs=1e-5)
    assert stats[1].mu == pytest.approx(mu, abs=1e-5)
    assert stats[1].sigma == pytest.approx(sigma, abs=1e-4)
    # Batching and padding change nothing.
    alone = token_stats(model, rows, tok.pad_token_id, batch_size=1)
    for a, b in zip(alone, stats):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5) and a.sigma == pytest.approx(b.sigma, abs=1e-5)


def test_membership_bad_input(tiny):
    model, tok = tiny
    with pytest.raises(UnlearnError, match="members and non-members"):
        membership(model, Encoder(tok, "qa"), [], [("a", "b")])


# ---- the check: memorised strings are told from random ones -------------------------


def random_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyz"
    return [(f"Code {i}?", "".join(rng.choice(letters) for _ in range(24))) for i in range(n)]


def test_mia_auc_near_one_on_memorised_strings():
    """16 random strings memorised by a tiny model against 16 it never saw (16 against 16, not 8:
    under no signal the AUC's standard deviation is 0.10 rather than 0.15, so 'near 0.5' is a check
    rather than a coin toss). Measured: untrained AUCs 0.40 (0.395 for min_k_plus_plus); after 120
    steps (training loss 0.016) every AUC is 1.0, mean log-prob -0.015 on members, -7.2 on the rest."""
    torch.manual_seed(0)
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    enc = Encoder(tok, "qa", max_length=96)
    pairs = random_pairs(32, seed=0)
    members, nonmembers = pairs[:16], pairs[16:]

    before = membership(model, enc, members, nonmembers, k=0.2)
    assert set(before) == set(ATTACKS)
    for name in ATTACKS:
        assert abs(before[name]["auc"] - 0.5) <= 0.3, (name, before[name])

    batch = collate({"forget": enc.encode_many(members)}, tok.pad_token_id)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        logits, targets, _ = response_logits(model, batch.input_ids, batch.attention_mask, batch.labels, fast=False)
        loss = nn.functional.cross_entropy(logits, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5  # memorised: a random letter alone costs ln 26 = 3.3 nats

    after = membership(model, enc, members, nonmembers, k=0.2)
    assert after["loss"]["auc"] >= 0.9
    assert after["min_k_plus_plus"]["auc"] >= 0.8
    assert after["zlib"]["auc"] >= 0.9 and after["min_k"]["auc"] >= 0.8
    assert after["loss"]["members_mean"] > after["loss"]["nonmembers_mean"]
    assert after["loss"]["members_mean"] > -0.5  # mean log-prob of a memorised response
