"""Relearning attacks: a few LoRA fine-tuning steps, then the forgotten outputs measured again.

    relearn  fine-tune on one part of the forget set (audit.relearn_fraction of its groups: people,
             passages; see data.forget.group_field, else each prompt is its own group) and measure
             the OTHER part. Deeb and Roger (2024) showed that a method which only hides knowledge
             gives the held-out facts back; one that removed them does not.
    benign   fine-tune on ordinary data (retain examples the audit does not measure) with the same
             budget, and measure everything: Lucki et al. (2024) found that even unrelated
             fine-tuning undoes some unlearning.

Both run on the original model too, as the reference. LoRA (rank audit.relearn_lora_r, all linear
layers), AdamW at audit.relearn_lr, audit.relearn_steps steps of audit.relearn_batch_size examples,
response tokens only; the adapter is merged before measuring. Deterministic for a seed on one device.
"""

from __future__ import annotations

import copy
import random
from typing import Any, Optional, Sequence

import torch

from unlearn.auditing.context import AuditContext, Probe, subset
from unlearn.auditing.registry import Trial, register_attack
from unlearn.config import LoraConfig
from unlearn.data.batch import collate
from unlearn.data.encode import Encoder
from unlearn.data.split import group_ids
from unlearn.evaluate.run import free_model
from unlearn.models import add_lora, response_logits


def finetune_lora(ctx: AuditContext, model: Any, pairs: Sequence[tuple[str, str]]) -> tuple[Any, list[float]]:
    """A merged copy of `model` fine-tuned with LoRA on (prompt, response) pairs; the step losses."""
    a, cfg = ctx.cfg.audit, ctx.cfg
    torch.manual_seed(cfg.seed)
    tuned = add_lora(copy.deepcopy(model), LoraConfig(r=a.relearn_lora_r, alpha=2 * a.relearn_lora_r, dropout=0.0,
                                                       target_modules="all-linear"))
    enc = Encoder(ctx.tokenizer, cfg.data.template, cfg.data.max_length, cfg.data.add_eos)
    rows = enc.encode_many(list(pairs))
    opt = torch.optim.AdamW([p for p in tuned.parameters() if p.requires_grad], lr=a.relearn_lr, weight_decay=0.0)
    rng = random.Random(cfg.seed)
    order: list[int] = []
    losses = []
    device = next(tuned.parameters()).device
    tuned.train()
    for _ in range(a.relearn_steps):
        take = []
        while len(take) < min(a.relearn_batch_size, len(rows)):
            if not order:
                order = list(range(len(rows)))
                rng.shuffle(order)
            take.append(order.pop())
        batch = collate({"forget": [rows[i] for i in take]}, ctx.tokenizer.pad_token_id).to(device)
        logits, targets, _ = response_logits(tuned, batch.input_ids, batch.attention_mask, batch.labels, fast=False)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
        loss.backward()
        loss = loss.detach()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
    tuned.eval()
    return tuned.merge_and_unload(), losses


def relearn_split(ctx: AuditContext) -> tuple[list[int], list[int]]:
    """(indices trained on, indices measured) of the forget set: whole groups on each side, the
    trained share audit.relearn_fraction of the groups (at least one group each way)."""
    items = ctx.sets["forget"].items
    groups = group_ids([i.prompt for i in items], [i.group for i in items])
    distinct = sorted(set(groups))
    random.Random(ctx.cfg.seed).shuffle(distinct)
    n = min(len(distinct) - 1, max(1, round(ctx.cfg.audit.relearn_fraction * len(distinct))))
    train = set(distinct[:n])
    return ([i for i, g in enumerate(groups) if g in train], [i for i, g in enumerate(groups) if g not in train])


def _relearn_applies(ctx: AuditContext) -> Optional[str]:
    s = ctx.sets.get("forget")
    if s is None:
        return "no forget set"
    if s.kind != "qa":
        return "relearning is implemented for question/answer forget sets"
    items = s.items
    if len(set(group_ids([i.prompt for i in items], [i.group for i in items]))) < 2:
        return "the forget set has a single group: nothing held out to measure"
    return None


@register_attack("relearn", kind="relearn", source="Deeb and Roger 2024, 'Do unlearning methods remove "
                 "information from language model weights?'; Hu et al. 2024 (relearning attacks)",
                 description="LoRA fine-tuning on part of the forget set; the other part measured",
                 applies=_relearn_applies)
def relearn(ctx: AuditContext, model: Any, label: str) -> list[Trial]:
    train_i, test_i = relearn_split(ctx)
    forget = ctx.sets["forget"]
    train_groups = {forget.items[i].group for i in train_i}
    tuned, losses = finetune_lora(ctx, model, [(forget.items[i].prompt, forget.items[i].target or "") for i in train_i])
    probe = Probe("relearn", {"forget": subset(forget, test_i)}, ctx.cfg.data.template, items={"forget": test_i})
    ft = ctx.sets.get("forget_test")
    if ft is not None and ft.kind == "qa" and all(i.group is not None for i in ft.items) and None not in train_groups:
        keep = [j for j, it in enumerate(ft.items) if it.group not in train_groups]
        if keep:  # paraphrases of the held-out groups only: the trained groups' facts were relearned directly
            probe.sets["forget_test"], probe.items["forget_test"] = subset(ft, keep), keep
    if "retain" in ctx.sets:
        probe.sets["retain"], probe.items["retain"] = ctx.sets["retain"], list(range(len(ctx.sets["retain"].items)))
    a = ctx.cfg.audit
    transform = f"relearn:{a.relearn_steps}:{a.relearn_lr}:{a.relearn_batch_size}:{a.relearn_lora_r}:{train_i}"
    trial = ctx.measure(tuned, label, [probe], transform=transform)[0]
    trial.info = {"trained_on": len(train_i), "measured": len(test_i), "steps": a.relearn_steps,
                  "first_loss": losses[0], "last_loss": losses[-1]}
    free_model(tuned)
    return [trial]


def benign_data(ctx: AuditContext) -> list[tuple[str, str]]:
    """Retain examples the audit does not measure (all of them when it measures every one)."""
    full = ctx.full_retain
    if full is None:
        return []
    measured = len(ctx.sets["retain"].items) if "retain" in ctx.sets else 0
    pool = full.items[measured:] or full.items
    return [(i.prompt, i.target) for i in pool if i.target]


@register_attack("benign", kind="relearn", source="Lucki et al. 2024, 'An adversarial perspective on machine "
                 "unlearning for AI safety'",
                 description="LoRA fine-tuning on ordinary (retain) data, the same budget; everything measured",
                 applies=lambda ctx: None if benign_data(ctx) else "no retain data with responses to fine-tune on")
def benign(ctx: AuditContext, model: Any, label: str) -> list[Trial]:
    pairs = benign_data(ctx)
    tuned, losses = finetune_lora(ctx, model, pairs)
    a = ctx.cfg.audit
    transform = f"benign:{a.relearn_steps}:{a.relearn_lr}:{a.relearn_batch_size}:{a.relearn_lora_r}:{len(pairs)}"
    trial = ctx.measure(tuned, label, [ctx.plain(name="benign")], transform=transform)[0]
    trial.info = {"trained_on": len(pairs), "steps": a.relearn_steps, "first_loss": losses[0], "last_loss": losses[-1]}
    free_model(tuned)
    return [trial]
