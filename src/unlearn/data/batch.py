"""Step batches: forget, mismatch and retain rows in one padded tensor, built deterministically.

The batch for micro-batch index i is a pure function of (seed, i, rank): each data stream walks a
fresh seeded permutation per epoch, and mismatch responses (and refusals) are drawn with a generator
seeded by (seed, i). Resuming at step s therefore needs no sampler state, and two processes that each take
their slice of the same global batch see exactly what one process with the whole batch would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from unlearn.data.encode import IGNORE, Encoded, Encoder
from unlearn.data.records import Example
from unlearn.errors import UnlearnError

SEGMENTS = ("forget", "mismatch", "refusal", "retain")
# Segments whose rows are built from the forget examples (their prompts); the rest need retain data.
FROM_FORGET = ("forget", "mismatch", "refusal")
_STREAM_IDS = {"forget": 1, "retain": 2, "mismatch": 3, "refusal": 4}


@dataclass
class Batch:
    """Rows of all segments, right-padded to the longest row of this batch (never a fixed length)."""

    input_ids: torch.Tensor  # [rows, T]
    attention_mask: torch.Tensor  # [rows, T]
    labels: torch.Tensor  # [rows, T], IGNORE outside response tokens
    segments: dict[str, slice] = field(default_factory=dict)  # segment -> rows

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.labels.to(device),
            dict(self.segments),
        )


def collate(rows_by_segment: dict[str, list[Encoded]], pad_id: int) -> Batch:
    """Concatenate segments (in SEGMENTS order) and right-pad to the longest row."""
    rows: list[Encoded] = []
    segments: dict[str, slice] = {}
    for name in SEGMENTS:
        seg = rows_by_segment.get(name) or []
        if seg:
            segments[name] = slice(len(rows), len(rows) + len(seg))
            rows.extend(seg)
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r.ids)
        ids[i, :n] = torch.tensor(r.ids)
        mask[i, :n] = 1
        labels[i, r.n_prompt : n] = torch.tensor(r.ids[r.n_prompt :])
    return Batch(ids, mask, labels, segments)


def _generator(*key: int) -> torch.Generator:
    g = torch.Generator()
    seed = 0
    for k in key:  # a simple, stable mix of the key parts
        seed = (seed * 1_000_003 + int(k) + 1) % (2**62)
    g.manual_seed(seed)
    return g


class EpochStream:
    """An endless sequence of indices into n items: a new seeded permutation each epoch."""

    def __init__(self, n: int, seed: int, stream: int):
        self.n, self.seed, self.stream = n, seed, stream
        self._perms: dict[int, list[int]] = {}

    def _perm(self, epoch: int) -> list[int]:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.clear()
            self._perms[epoch] = torch.randperm(self.n, generator=_generator(self.seed, self.stream, epoch)).tolist()
        return self._perms[epoch]

    def take(self, start: int, count: int) -> list[int]:
        return [self._perm(p // self.n)[p % self.n] for p in range(start, start + count)]


class StepBatcher:
    """Builds the batch of each micro-step for the segments the objective needs."""

    def __init__(
        self,
        encoder: Encoder,
        *,
        forget: Sequence[Encoded] = (),
        forget_prompts: Sequence[str] = (),
        retain: Sequence[Encoded] = (),
        mismatch_pool: Sequence[str] = (),
        refusals: Sequence[str] = (),
        segments: Sequence[str] = ("forget", "mismatch", "retain"),
        batch_size: int = 2,
        k: int = 5,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.encoder = encoder
        self.forget, self.forget_prompts, self.retain = list(forget), list(forget_prompts), list(retain)
        self.pool = list(mismatch_pool)
        self.refusals = list(refusals)
        self.segments = [s for s in SEGMENTS if s in segments]
        self.batch_size, self.k, self.seed = batch_size, k, seed
        self.rank, self.world_size = rank, world_size
        need_forget = any(s in self.segments for s in FROM_FORGET)
        if need_forget and not self.forget:
            raise ValueError("the objective needs forget examples")
        if "retain" in self.segments and not self.retain:
            raise ValueError("the objective needs retain examples")
        if "mismatch" in self.segments and not self.pool:
            raise ValueError("the objective needs a mismatch pool")
        if "refusal" in self.segments and not self.refusals:
            raise ValueError("the objective needs refusal replies")
        self._forget_stream = EpochStream(max(1, len(self.forget)), seed, _STREAM_IDS["forget"])
        self._retain_stream = EpochStream(max(1, len(self.retain)), seed, _STREAM_IDS["retain"])

    def _mine(self, items: list[int]) -> list[int]:
        b = self.batch_size
        return items[self.rank * b : (self.rank + 1) * b]

    def indices(self, index: int) -> dict[str, list]:
        """Which examples micro-batch `index` uses (this process's share of the global batch)."""
        global_b = self.batch_size * self.world_size
        out: dict[str, list] = {}
        need_forget = any(s in self.segments for s in FROM_FORGET)
        if need_forget:
            out["forget"] = self._mine(self._forget_stream.take(index * global_b, global_b))
        if "retain" in self.segments:
            out["retain"] = self._mine(self._retain_stream.take(index * global_b, global_b))
        if "mismatch" in self.segments:
            g = _generator(self.seed, _STREAM_IDS["mismatch"], index)
            n = len(self.pool)
            if n >= self.k:
                # k distinct responses per forget example
                draws = [torch.randperm(n, generator=g)[: self.k].tolist() for _ in range(global_b)]
            else:
                draws = torch.randint(n, (global_b, self.k), generator=g).tolist()
            out["mismatch"] = self._mine(draws)
        if "refusal" in self.segments:
            # One refusal per forget example: refusal row j pairs with forget row j (DPO needs that).
            g = _generator(self.seed, _STREAM_IDS["refusal"], index)
            out["refusal"] = self._mine(torch.randint(len(self.refusals), (global_b,), generator=g).tolist())
        return out

    def forget_use(self, steps: Iterable[int], grad_accum: int = 1) -> list[tuple[int, int]]:
        """Which forget examples the optimizer steps `steps` (0-based) used, all processes
        together, in order of first use: [(example index, steps that used it)]. A step is its
        grad_accum micro-batches; an example in several rows of one step counts once. Forget
        examples also give the prompts of mismatch and refusal rows: those count as uses too."""
        if not any(s in self.segments for s in FROM_FORGET):
            return []
        global_b = self.batch_size * self.world_size
        times: dict[int, int] = {}
        for step in steps:
            start = step * grad_accum * global_b
            for i in dict.fromkeys(self._forget_stream.take(start, grad_accum * global_b)):
                times[i] = times.get(i, 0) + 1
        return list(times.items())

    def batch(self, index: int) -> Batch:
        idx = self.indices(index)
        rows: dict[str, list[Encoded]] = {}
        if "forget" in self.segments:
            rows["forget"] = [self.forget[i] for i in idx["forget"]]
        if "mismatch" in self.segments:
            pairs = [
                (self.forget_prompts[f], self.pool[j])
                for f, js in zip(idx["forget"], idx["mismatch"])
                for j in js
            ]
            rows["mismatch"] = self.encoder.encode_many(pairs)
        if "refusal" in self.segments:
            pairs = [(self.forget_prompts[f], self.refusals[j]) for f, j in zip(idx["forget"], idx["refusal"])]
            rows["refusal"] = self.encoder.encode_many(pairs)
        if "retain" in self.segments:
            rows["retain"] = [self.retain[i] for i in idx["retain"]]
        pad = self.encoder.tokenizer.pad_token_id
        return collate(rows, pad)


def encode_examples(encoder: Encoder, examples: Sequence[Example]) -> list[Encoded]:
    """Tokenize examples in chunks (the fast tokenizer batches them)."""
    out: list[Encoded] = []
    for i in range(0, len(examples), 256):
        chunk = examples[i : i + 256]
        try:
            out.extend(encoder.encode_many([(e.prompt, e.response) for e in chunk]))
        except UnlearnError:
            # Say which example it was: encode the chunk one by one to find it (error path only).
            for e in chunk:
                try:
                    encoder.encode(e.prompt, e.response)
                except UnlearnError as err:
                    raise UnlearnError(f"{e.where}: {err}" if e.where else str(err)) from None
            raise
    return out
