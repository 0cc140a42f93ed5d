"""Row packing: lay a right-padded batch out in fewer, fuller rows, with the same result.

Rows of one step differ a lot in length (a forget example of a hundred tokens next to ten
mismatch answers of a dozen), and the k mismatch rows repeat the forget example's prompt. Packed,
the prompt is computed once and the short rows are laid side by side, each with its own positions
and a block-diagonal causal mask, instead of each being padded to the longest. Same losses, a
fraction of the tokens. `response_logits(pack=True)` (unlearn.models.forward) uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

@dataclass
class PackedRows:
    """Rows of a right-padded batch laid out in fewer, fuller rows ("bins").

    input_ids, position_ids: [bins, width]; mask: [bins, 1, width, width] boolean, True where a
    token may attend. index[r, t] is where token t of source row r is computed in the flattened
    [bins * width] layout (undefined beyond the row's length); tokens a row shares with another
    row point at the other row's copy. units: per bin, its units in order from position 0, as
    (start, root_end, end, prefix): a token attends only within its unit. [start, root_end) is the
    unit's first row, plain causal attention; [root_end, end) holds the rows that share its first
    tokens, each attending to at most the first `prefix` tokens of that row and, causally, to
    itself (as `mask` says). A bin's tail beyond its last unit is padding.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    mask: torch.Tensor
    index: torch.Tensor
    cost: int  # layout_cost of this layout
    units: tuple[tuple[tuple[int, int, int, int], ...], ...] = ()


# A row shares its prefix with a longer row only when they have this many first tokens in common.
MIN_SHARED_PREFIX = 8
# The widest bin pack_rows plans unless a width is given (wider when one unit is longer).
MAX_WIDTH = 4096


def layout_cost(rows: int, width: int, hidden_size: int, scores: int | None = None) -> int:
    """Estimated cost of a forward over [rows, width] tokens: the linear layers grow with the
    tokens; attention (weighted as half as efficient as a matmul) with the attention scores
    computed: rows x width^2 for a padded batch, or `scores`, those of a packed layout's units (its
    attention runs unit by unit: unlearn.models.attention, unit_scores)."""
    attention = rows * width * width if scores is None else scores
    return rows * width * 3 * hidden_size + attention


def unit_scores(root: int, rest: int, prefix: int) -> int:
    """Attention scores of a unit (see PackedRows.units): its first row of `root` tokens, causal,
    and `rest` tokens of rows attending to up to `prefix` of its tokens and to themselves."""
    return root * root + rest * (prefix + rest)


def _units(lengths: list[int], lcp: list[list[int]] | None, cap: int):
    """Rows grouped into units (a row and the rows that share its prefix), longest rows first, no
    unit longer than `cap` tokens: (root of each row, tokens it shares, units, unit lengths)."""
    n = len(lengths)
    root_of, shared = list(range(n)), [0] * n
    units: dict[int, list[int]] = {}
    unit_len: dict[int, int] = {}
    for r in sorted(range(n), key=lambda r: (-lengths[r], r)):
        best = -1
        if lcp is not None:
            cands = [u for u in units
                     if lcp[r][u] >= MIN_SHARED_PREFIX and unit_len[u] + lengths[r] - lcp[r][u] <= cap]
            best = max(cands, key=lambda u: (lcp[r][u], -u), default=-1)
        if best >= 0:
            root_of[r], shared[r] = best, lcp[r][best]
            units[best].append(r)
            unit_len[best] += lengths[r] - shared[r]
        else:
            units[r], unit_len[r] = [r], lengths[r]
    return root_of, shared, units, unit_len


def _plan(lengths: list[int], lcp: list[list[int]] | None, width: int | None, hidden_size: int):
    """Units and their bins: of the unit size limits and bin widths tried, the layout of least
    layout_cost. The limit matters where many short rows begin alike (a template's first tokens):
    without it they join one unit as long as a bin may be, whose attention is dense over its whole
    length. Since attention runs unit by unit, the bins only add their padding: the widest bin
    tried holds everything up to MAX_WIDTH tokens (a bin's mask is width^2 booleans)."""
    longest = max(lengths)
    if width is not None or lcp is None:
        caps = [max(longest, 2048)]
    else:
        caps, c = [], longest
        while c < 2048:
            caps.append(c)
            c *= 2
        caps.append(max(longest, 2048))
    best = None
    for cap in caps:
        root_of, shared, units, unit_len = _units(lengths, lcp, cap)

        def first_fit(capacity: int) -> list[list[int]]:
            bins: list[list[int]] = []
            fill: list[int] = []
            for u in sorted(units, key=lambda u: (-unit_len[u], u)):
                for b in range(len(bins)):
                    if fill[b] + unit_len[u] <= capacity:
                        bins[b].append(u)
                        fill[b] += unit_len[u]
                        break
                else:
                    bins.append([u])
                    fill.append(unit_len[u])
            return bins

        scores = sum(unit_scores(lengths[u], unit_len[u] - lengths[u], max(shared[r] for r in units[u]))
                     for u in units)

        def cost(bins: list[list[int]]) -> int:
            return layout_cost(len(bins), max(sum(unit_len[u] for u in b) for b in bins), hidden_size, scores)

        widest, total = max(unit_len.values()), sum(unit_len.values())
        if width is None:
            widths, w = [], widest
            while w < min(total, MAX_WIDTH):
                widths.append(w)
                w *= 2
            widths.append(max(widest, min(total, MAX_WIDTH)))
            bins = min((first_fit(w) for w in widths), key=cost)
        else:
            bins = first_fit(max(width, widest))
        if best is None or cost(bins) < best[-1]:
            best = (root_of, shared, units, unit_len, bins, cost(bins))
    return best


def pack_rows(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    width: int | None = None,
    hidden_size: int = 1024,
    share_prefix: bool = True,
) -> PackedRows:
    """Lay out right-padded rows so that fewer token positions are computed, with the same result.

    1. Shared prefixes (share_prefix): a row whose first tokens (at least MIN_SHARED_PREFIX) equal
       those of a longer row (the k mismatch answers and the forget example all start with the
       same prompt) is computed only from where it differs; its own tokens attend to the longer
       row's copy of the prefix, and their positions continue from it. Causal attention makes the
       prefix's hidden states the same in every row that has it: only the work changes.
    2. Packing: the rows, each with the rows sharing its prefix ("units"), go first-fit-decreasing
       into bins, each token attending only within its unit, causally. The bin width is `width`,
       or the one of least layout_cost (a few bins of long rows against many short ones).
    With share_prefix, the layout with and the one without sharing are both planned and the
    cheaper kept. The tail of a bin is padding that attends only to itself.
    """
    n = input_ids.shape[0]
    lengths = attention_mask.sum(1).tolist()
    device = input_ids.device
    lcp = None
    if share_prefix and n > 1:  # common prefix lengths of all pairs of rows
        valid = attention_mask.bool()
        same = (input_ids[:, None, :] == input_ids[None, :, :]) & valid[:, None, :] & valid[None, :, :]
        lcp = same.long().cumprod(-1).sum(-1).tolist()
    plans = [_plan(lengths, None, width, hidden_size)]
    if lcp is not None:
        plans.append(_plan(lengths, lcp, width, hidden_size))
    root_of, shared, units, unit_len, bins, cost = min(plans, key=lambda plan: plan[-1])
    width = max(sum(unit_len[u] for u in b) for b in bins)

    nb = len(bins)
    ids = torch.zeros(nb, width, dtype=input_ids.dtype, device=device)
    pos = torch.zeros(nb, width, dtype=torch.long, device=device)
    owner = torch.full((nb, width), -1, dtype=torch.long, device=device)
    root = torch.full((nb, width), -1, dtype=torch.long, device=device)
    limit = torch.zeros(nb, width, dtype=torch.long, device=device)
    index = torch.zeros_like(input_ids)
    bin_units = []
    for b, unit_ids in enumerate(bins):
        off = 0
        spans = []
        for u in unit_ids:
            spans.append((off, off + lengths[u], off + unit_len[u], max(shared[r] for r in units[u])))
            for r in units[u]:
                s0, n_r = shared[r], lengths[r]
                k = n_r - s0
                sl = slice(off, off + k)
                ids[b, sl] = input_ids[r, s0:n_r]
                pos[b, sl] = torch.arange(s0, n_r, device=device)
                owner[b, sl] = r
                root[b, sl] = root_of[r]
                limit[b, sl] = s0
                index[r, s0:n_r] = b * width + off + torch.arange(k, device=device)
                if s0:
                    index[r, :s0] = index[root_of[r], :s0]
                off += k
        bin_units.append(tuple(spans))
        tail = width - off
        if tail:  # padding: its own segment, positions from 0
            pos[b, off:] = torch.arange(tail, device=device)
            owner[b, off:] = -1 - b
            root[b, off:] = -1 - b
    q_owner, k_owner = owner[:, :, None], owner[:, None, :]
    causal = pos[:, None, :] <= pos[:, :, None]
    cross = (k_owner == root[:, :, None]) & (pos[:, None, :] < limit[:, :, None])
    mask = causal & ((q_owner == k_owner) | cross)
    return PackedRows(ids, pos, mask.unsqueeze(1), index, cost, tuple(bin_units))
