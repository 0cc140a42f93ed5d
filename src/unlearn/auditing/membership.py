"""Membership inference: can the model's likelihoods still tell the forget set from unseen text?

After real forgetting, the forget examples should look like data the model never saw. Each attack
gives every example a score; the AUC says how well the score separates members (the forget set)
from non-members (unseen data of the same kind): 0.5 is chance, 1.0 is perfect separation.

The definitions follow open-unlearning (locuslab/open-unlearning, src/evals/metrics/mia/ and
src/evals/metrics/utils.py), and so give the same AUCs, with one change of sign: there, every score
is oriented like a loss (higher = less likely a member) and the AUC is computed with the forget
set labelled 0. Here every score is oriented so that HIGHER = MORE LIKELY A MEMBER, and
auc(members, nonmembers) is the probability that a member outscores a non-member: the same number.

All statistics are over the response tokens only (the prompt is given, not remembered), teacher
forced, one forward per batch.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from unlearn.data.encode import Encoded, Encoder
from unlearn.errors import UnlearnError
from unlearn.evaluate.nll import response_batches
from unlearn.models import per_position

ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
# Min-K%++'s variance floor, as open-unlearning's (min_k_plus_plus.py: clamp(sigma, min=1e-6) on
# the variance): a position where the model is certain would otherwise divide by ~0.
VARIANCE_FLOOR = 1e-6


@dataclass
class TokenStats:
    """One example's response tokens: log p(x_t | x_<t) of each, and the mean and standard
    deviation of log p(z | x_<t) over the vocabulary, z ~ p(. | x_<t) (Min-K%++'s mu_t, sigma_t)."""

    logprobs: list[float]
    mu: list[float]
    sigma: list[float]


def _stats_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """[positions, 3]: log p(target), mu = E_z[log p(z)], sigma = sqrt(E_z[(log p(z) - mu)^2])."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    zero = torch.zeros((), device=logp.device)
    # p * log p is 0 where p is 0 (a logit of -inf would otherwise give 0 * -inf = nan).
    mu = torch.where(p > 0, p * logp, zero).sum(-1)
    # The centred form: E[(lp - mu)^2] = E[lp^2] - mu^2 without cancelling two large numbers.
    var = torch.where(p > 0, p * (logp - mu.unsqueeze(-1)) ** 2, zero).sum(-1)
    target = logp.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return torch.stack([target, mu, var.clamp(min=0).sqrt()], dim=-1)


def token_stats(model: Any, encoded: Sequence[Encoded], pad_id: int, batch_size: int = 8) -> list[TokenStats]:
    """TokenStats of each example's response tokens (EOS included when encoded), in input order.

    Teacher forced by unlearn.evaluate.nll.response_batches, as the target NLL is: the model's own
    logits at the positions that predict a response token, one forward per batch, no gradient.
    The vocabulary-sized fp32 work runs over chunks of positions (unlearn.models.per_position).
    """
    if batch_size < 1:
        raise UnlearnError(f"membership: batch_size must be >= 1, got {batch_size}")
    out: list[TokenStats] = []
    for n, logits, targets, rows in response_batches(model, encoded, pad_id, batch_size):
        with torch.no_grad():
            stats = per_position(_stats_of, logits, targets).cpu()
        counts = torch.bincount(rows.cpu(), minlength=n).tolist()
        for part in torch.split(stats, counts):
            lp, mu, sigma = part.T.tolist() if len(part) else ([], [], [])
            out.append(TokenStats(lp, mu, sigma))
    return out


def _lowest_mean(values: Sequence[float], k: float) -> float:
    """Mean of the lowest max(1, floor(k * n)) values (open-unlearning's num_k)."""
    n = max(1, int(len(values) * k))
    return sum(sorted(values)[:n]) / n


def _scored_tokens(values: list[float]) -> list[float]:
    """The tokens Min-K% and Min-K%++ rank: all but the last response token (in practice the EOS),
    as open-unlearning's tokenwise_logprobs ("-1 to ignore eos prediction"); a one-token response
    keeps its token (open-unlearning scores it 0)."""
    return values[:-1] if len(values) > 1 else values


def mia_scores(stats: Sequence[TokenStats], texts: Sequence[str], k: float = 0.2) -> dict[str, list[float]]:
    """Per-example scores of each attack, HIGHER = MORE LIKELY A MEMBER; texts are the responses.

    With lp_t = log p(x_t | x_<t) over the N response tokens (EOS included):
    - loss (Yeom et al. 2018, "Privacy risk in machine learning"): mean lp_t = -(mean NLL).
      open-unlearning: avg_loss = mean NLL, sign flipped here.
    - zlib (Carlini et al. 2021, "Extracting training data from large language models"):
      -(mean NLL) / len(zlib.compress(text.encode("utf-8"))): the MEAN NLL over tokens, as
      open-unlearning's ZLIBAttack (avg_loss / zlib entropy), sign flipped here.
    - min_k (Shi et al. 2024, "Detecting pretraining data from large language models"): mean of the
      lowest floor(k * n) (at least 1) of lp_t; open-unlearning returns its negative.
    - min_k_plus_plus (Zhang et al. 2024, "Min-K%++"): the same over
      s_t = (lp_t - mu_t) / sigma_t, mu_t = E_{z~p(.|x_<t)} log p(z|x_<t),
      sigma_t^2 = E_z[(log p(z|x_<t))^2] - mu_t^2 (floored at 1e-6, as open-unlearning);
      open-unlearning returns its negative.
    min_k and min_k_plus_plus rank n = N - 1 tokens: the last response token (the EOS) is left out,
    as open-unlearning's tokenwise_logprobs does; loss and zlib use all N, as its avg_loss does.
    """
    if len(stats) != len(texts):
        raise UnlearnError(f"membership: {len(stats)} token statistics but {len(texts)} texts")
    if not 0 < k <= 1:
        raise UnlearnError(f"membership: k (the Min-K% share) must be in (0, 1], got {k}")
    out: dict[str, list[float]] = {name: [] for name in ATTACKS}
    for i, (s, text) in enumerate(zip(stats, texts)):
        if not s.logprobs or not len(s.logprobs) == len(s.mu) == len(s.sigma):
            raise UnlearnError(
                f"membership: example {i} has {len(s.logprobs)} log-probs, {len(s.mu)} means and "
                f"{len(s.sigma)} deviations (need the same number, at least one)"
            )
        mean_lp = sum(s.logprobs) / len(s.logprobs)
        out["loss"].append(mean_lp)
        out["zlib"].append(mean_lp / len(zlib.compress(text.encode("utf-8"))))
        out["min_k"].append(_lowest_mean(_scored_tokens(s.logprobs), k))
        normalised = [
            (lp - mu) / math.sqrt(max(sigma * sigma, VARIANCE_FLOOR))
            for lp, mu, sigma in zip(s.logprobs, s.mu, s.sigma)
        ]
        out["min_k_plus_plus"].append(_lowest_mean(_scored_tokens(normalised), k))
    return out


def auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """ROC AUC of telling members from non-members by score: P(member > non-member) + P(tie) / 2.

    The Mann-Whitney U statistic by ranks, O(n log n): with the pooled scores ranked 1..n (tied
    scores share their mean rank) and R the rank sum of the m members,
        AUC = (R - m (m + 1) / 2) / (m * n_nonmembers).
    Equals sklearn's roc_auc_score(labels=[1]*m + [0]*n, scores), which open-unlearning uses.
    ValueError on an empty side or a NaN score.
    """
    m, n = len(members), len(nonmembers)
    if m == 0 or n == 0:
        raise ValueError(f"auc needs scores on both sides, got {m} members and {n} non-members")
    pooled = [(float(v), True) for v in members] + [(float(v), False) for v in nonmembers]
    if any(math.isnan(v) for v, _ in pooled):
        raise ValueError("auc: a score is NaN")
    pooled.sort(key=lambda item: item[0])
    rank_sum = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        mean_rank = (i + j) / 2 + 1  # ranks i+1 .. j+1 share their mean
        rank_sum += mean_rank * sum(1 for _, is_member in pooled[i : j + 1] if is_member)
        i = j + 1
    return (rank_sum - m * (m + 1) / 2) / (m * n)


def membership(
    model: Any,
    encoder: Encoder,
    members: Sequence[tuple[str, str]],
    nonmembers: Sequence[tuple[str, str]],
    batch_size: int = 8,
    k: float = 0.2,
) -> dict[str, dict]:
    """Every attack's AUC on (prompt, response) pairs: {attack: {auc, members_mean, nonmembers_mean}}.

    members: the forget set; nonmembers: unseen data of the same kind. Scores are those of
    `mia_scores` (higher = more likely a member), so an AUC near 0.5 means the attack cannot tell
    the forget set from unseen data, and near 1 that the model still treats it as seen.
    """
    if not members or not nonmembers:
        raise UnlearnError(
            f"membership inference needs members and non-members, got {len(members)} and {len(nonmembers)}"
        )
    pad_id = encoder.tokenizer.pad_token_id
    if pad_id is None:
        raise UnlearnError("membership: the tokenizer has no pad token (unlearn.models.ensure_pad_token sets one)")

    def scores(pairs: Sequence[tuple[str, str]]) -> dict[str, list[float]]:
        stats = token_stats(model, encoder.encode_many(list(pairs)), pad_id, batch_size)
        return mia_scores(stats, [response for _, response in pairs], k)

    seen, unseen = scores(members), scores(nonmembers)
    return {
        name: {
            "auc": auc(seen[name], unseen[name]),
            "members_mean": sum(seen[name]) / len(seen[name]),
            "nonmembers_mean": sum(unseen[name]) / len(unseen[name]),
        }
        for name in ATTACKS
    }


def privleak(auc_model: float, auc_reference: float) -> float | None:
    """PrivLeak (Shi et al. 2024, MUSE; open-unlearning src/evals/metrics/privacy.py privleak), in %:

        ((1 - AUC_model) - (1 - AUC_ref)) / ((1 - AUC_ref) + 1e-10) * 100

    with AUC the membership AUC of forget (members) against holdout (non-members) as auc() gives it,
    and the reference a retain-only model's (else a fixed AUC such as 0.5). 0: as private as the
    reference; -100: the forget set is plainly seen (under-unlearned); large positive: over-unlearned.
    open-unlearning's 1e-10 guard is kept so that values agree to the last digit; None where the
    reference's 1 - AUC is 0 (there the guard would give a meaningless +-1e12)."""
    ref = 1 - auc_reference
    if ref <= 0:
        return None
    return ((1 - auc_model) - ref) / (ref + 1e-10) * 100

