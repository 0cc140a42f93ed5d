"""Batched generation for evaluation: left padding, prompts sorted by length, KV cache, greedy by default.

The loop is `unlearn.evaluate.decode.decode`: transformers' `generate` computes every row of a batch
until the last one stops; `decode` takes rows that have ended out of the batch (and its KV cache),
so a batch whose outputs end early costs about what its unfinished rows cost, and computes a prefix
that rows share once. Greedy outputs are the ones `generate` gives
(tests/evaluate/test_generate.py compares the two token for token).

Prompts are rendered exactly as in training (`Encoder.prompt_text`), and tokenized the way the
Encoder tokenizes them, so evaluation asks the model what training taught it to answer. Generation
stops at EOS, at the chat template's end-of-turn token, and at the template's next-prompt marker
(with the qa template the model would otherwise go on to write the next "### Question:").
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import torch

from unlearn.data.encode import Encoder
from unlearn.evaluate.decode import GenerationSettings, batches, decode, part_of


def end_of_turn_ids(encoder: Encoder) -> list[int]:
    """Token ids that end a response: EOS, and for the chat template the token that closes the
    assistant's turn (found by rendering a turn and reading the first special token after it)."""
    tok = encoder.tokenizer
    ids = [tok.eos_token_id] if tok.eos_token_id is not None else []
    if encoder.chat:
        marker = "\u2063answer\u2063"
        full = tok.apply_chat_template(
            [{"role": "user", "content": "q"}, {"role": "assistant", "content": marker}], tokenize=False
        )
        tail = full[full.rfind(marker) + len(marker):]
        for t in tok(tail, add_special_tokens=False)["input_ids"]:
            if t in encoder.special_ids:
                ids.append(t)
                break
    return sorted(set(ids))


def stop_strings(encoder: Encoder) -> list[str]:
    """Text that starts the next turn in a plain-text template ('### Question:' for qa)."""
    if encoder.chat:
        return []
    head = encoder.template.split("{prompt}", 1)[0].strip()
    return [head] if head else []


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """The output up to the first stop string."""
    cut = len(text)
    for s in stops:
        i = text.find(s)
        if i >= 0:
            cut = min(cut, i)
    return text[:cut]


def prompt_ids(encoder: Encoder, texts: Sequence[str], max_tokens: int, raw: bool = False,
               prefills: Optional[Sequence[str]] = None) -> list[list[int]]:
    """Token ids of rendered prompts, tokenized as the Encoder tokenizes training text.
    raw=True: the texts are given as they are, without the template (passage prefixes).
    prefills: text each answer is made to start with, appended after the rendered prompt (the
    audit's "Sure, here is" attacks); the space before it belongs to it, as before a response."""
    tok = encoder.tokenizer
    rendered = list(texts) if raw else [encoder.prompt_text(t) for t in texts]
    if prefills is not None:
        rendered = [r + (" " + p if p and not encoder.chat else p) for r, p in zip(rendered, prefills)]
    add_special = raw or not encoder.chat
    if raw and tok.bos_token and all(t.startswith(tok.bos_token) for t in rendered):
        add_special = False  # already rendered with special tokens (a judge's chat template)
    ids = tok(rendered, add_special_tokens=add_special)["input_ids"]
    out = []
    for row in ids:
        if len(row) > max_tokens:
            keep_head = 1 if row and row[0] in encoder.special_ids and add_special else 0
            row = row[:keep_head] + row[len(row) - (max_tokens - keep_head):]
        out.append(list(row))
    return out


def continuation_text(tok: Any, prompt: Sequence[int], new: Sequence[int]) -> str:
    """The text that tokens `new` add after `prompt`, as generated. Decoded together with the prompt,
    because a tokenizer may drop a piece's leading space when decoding it alone (SentencePiece's
    "▁walked"), and "the boy" + "walked" is not what the model wrote."""
    head = tok.decode(list(prompt), skip_special_tokens=True)
    full = tok.decode(list(prompt) + list(new), skip_special_tokens=True)
    return full[len(head):] if full.startswith(head) else tok.decode(list(new), skip_special_tokens=True)


def decode_output(tok: Any, prompt: Sequence[int], new: Sequence[int], raw: bool, stops: Sequence[str]) -> str:
    """One output's text from the tokens generated after `prompt`, the same for every backend: a
    raw prompt's continuation exactly as generated (leading space and all); otherwise the new
    tokens decoded without special tokens, cut at the first stop string and stripped."""
    if raw:
        return continuation_text(tok, prompt, new)
    return cut_at_stop(tok.decode(list(new), skip_special_tokens=True), stops).strip()


@torch.no_grad()
def generate(
    model: Any,
    encoder: Encoder,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    raw: bool = False,
    prefills: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> list[str]:
    """Generate a response to each prompt (rendered with the encoder's template unless raw).

    Batches are built from prompts sorted by length (least padding), left-padded, and run with the
    KV cache; outputs come back in input order, decoded without special tokens, cut at the
    template's stop strings and stripped. Raw prompts (passages, the copyright setting) get their
    continuation exactly as generated, not stripped: joined to the prompt it is the text the model
    wrote (fluency reads it so). `prefills`: text each answer is forced to start with (not part of
    the returned output). `progress(n)` is called with the number of prompts done per batch.
    """
    ids, new = generate_ids(model, encoder, prompts, settings, raw=raw, prefills=prefills, progress=progress)
    stops = [] if raw else stop_strings(encoder)
    return [decode_output(encoder.tokenizer, p, n, raw, stops) for p, n in zip(ids, new)]


@torch.no_grad()
def generate_ids(
    model: Any,
    encoder: Encoder,
    prompts: Sequence[str],
    settings: GenerationSettings,
    *,
    raw: bool = False,
    prefills: Optional[Sequence[str]] = None,
    progress: Optional[Callable[[int], None]] = None,
) -> tuple[list[list[int]], list[list[int]]]:
    """(each prompt's token ids, the token ids generated after it, the token that ended it
    included): what `generate` decodes; in input order."""
    if not prompts:
        return [], []
    tok = encoder.tokenizer
    ids = prompt_ids(encoder, prompts, settings.max_prompt_tokens, raw, prefills)
    stops = [] if raw else stop_strings(encoder)
    eos = end_of_turn_ids(encoder)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs: list[list[int]] = [[] for _ in ids]

    def stopped(new: list[int]) -> bool:
        return any(s in tok.decode(new, skip_special_tokens=True) for s in stops)

    if settings.do_sample:
        torch.manual_seed(settings.seed)
    try:
        for batch in batches(ids, settings.batch_size):
            parts = [part_of(ids, rows, tok.pad_token_id, device) for rows in batch]
            new = decode(model, parts, settings, eos_ids=eos, stopped=stopped if stops else None)
            for i, n in zip([i for rows in batch for i in rows], new):
                outputs[i] = n
            if progress is not None:
                progress(sum(len(rows) for rows in batch))
    finally:
        model.train(was_training)
    return ids, outputs
