"""One unlearning step, two ways, on the same model, data, objective weights and k:

- `UnlearnStep`: `unlearn` as shipped: it prepares the policy with the run's own
  unlearn.train.prepare_policy and calls the run's own step, unlearn.train.train_step
  (StepBatcher -> ResponseLM -> StepContext -> Objective -> backward -> clip -> AdamW);
  tests/test_bench.py checks that its losses equal those `unlearn run` logs.
- `AuthorsStep`: the compute pattern of the authors' public script, re-expressed faithfully.

Each has `step(i) -> {"loss", "tokens", "padded_tokens"}` for micro-batch i.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field
from typing import Any

import torch

PAPER_WEIGHTS = {"ga": 0.5, "mismatch": 1.0, "kl": 1.0}


@dataclass
class Setting:
    """What a benchmark variant runs."""

    model: str = "smollm2-135m"
    dtype: str = "float32"  # the weights' dtype (unlearn's model.dtype)
    impl: str = "unlearn"  # unlearn | authors
    lora: bool = False
    lora_r: int = 8
    mixed_precision: str = "no"  # no | bf16 | fp16 (unlearn only)
    pack_rows: bool = True  # unlearn only
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the decoder (unlearn only)
    fused_adamw: bool = True  # unlearn only; False: torch's default (foreach) AdamW, as before
    chunk_vocab: bool = True  # unlearn only; False: vocabulary-sized work in one piece, as before
    # unlearn only; False: packed rows laid out by the dense attention's cost and attending through
    # SDPA over each bin's whole mask, as before unlearn.models.attention
    unit_attention: bool = True
    fuse_lora: bool = True  # unlearn only; False: peft's own LoRA forward, as before unlearn.models.lora
    batch_size: int = 2
    k: int = 5
    seq_len: int = 128
    shape: str = "paper"  # paper | full  (see common.paper_shaped_data)
    objective: dict[str, float] = field(default_factory=lambda: dict(PAPER_WEIGHTS))
    lr: float = 1e-5
    seed: int = 0
    threads: int = 0  # torch threads in the worker; 0: torch's default (all cores)
    # authors only: how their tokenizer call pads. "max_length": every row to seq_len (their
    # padding="max_length" with a tokenizer whose maximum length is seq_len); "longest": to the
    # longest row of each batch, which is what padding="max_length" does with a tokenizer that has
    # no maximum length (their best case).
    pad: str = "max_length"
    # glibc keeps freed memory for reuse (unlearn.memory.keep_freed_memory). None: as each ships, so
    # unlearn (its command line makes the setting at start) yes, the authors' script no.
    keep_freed_memory: bool | None = None

    @property
    def keeps_freed_memory(self) -> bool:
        return self.impl == "unlearn" if self.keep_freed_memory is None else self.keep_freed_memory

    @property
    def label(self) -> str:
        parts = [self.impl, "LoRA" if self.lora else "full FT"]
        if self.impl == "authors":
            parts.append("padded to the longest row (their best case)" if self.pad == "longest"
                         else f"padded to {self.seq_len}")
        if self.mixed_precision != "no":
            parts.append(self.mixed_precision)
        if self.impl == "unlearn" and not self.pack_rows:
            parts.append("no packing")
        if self.gradient_checkpointing:
            parts.append("grad ckpt")
        if self.impl == "unlearn" and not self.fused_adamw:
            parts.append("foreach AdamW")
        if self.impl == "unlearn" and not self.chunk_vocab:
            parts.append("vocab work in one piece")
        if self.impl == "unlearn" and not self.unit_attention:
            parts.append("dense attention over each bin")
        if self.impl == "unlearn" and self.lora and not self.fuse_lora:
            parts.append("peft's LoRA forward")
        if self.compile:
            parts.append("compile")
        if self.keeps_freed_memory != (self.impl == "unlearn"):
            parts.append("with unlearn's allocator setting" if self.keeps_freed_memory else "glibc's default allocator")
        return ", ".join(parts)


# Random-init models of the paper's shapes, for GPU runs (no download): `random:opt-1.3b`.
SHAPES: dict[str, tuple[str, dict[str, Any]]] = {
    "opt-1.3b": ("opt", dict(hidden_size=2048, ffn_dim=8192, num_hidden_layers=24, num_attention_heads=32,
                             word_embed_proj_dim=2048, vocab_size=50272, max_position_embeddings=2048)),
    "llama-2-7b": ("llama", dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                 num_attention_heads=32, num_key_value_heads=32, vocab_size=32000,
                                 max_position_embeddings=4096)),
}


def load(setting: Setting) -> tuple[Any, Any]:
    """(model, tokenizer): a model name or alias through unlearn's loader, or `random:SHAPE[:LAYERS]`
    (a randomly initialised model of a SHAPES entry, optionally with fewer layers, and a byte-level
    tokenizer), built directly on the GPU when there is one."""
    from unlearn.config import ModelConfig
    from unlearn.models import DTYPES, byte_tokenizer, ensure_pad_token, load_model

    dtype = DTYPES[setting.dtype]
    if not setting.model.startswith("random:"):
        return load_model(ModelConfig(name=setting.model, dtype=setting.dtype))
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    _, shape, *layers = setting.model.split(":")
    kind, cfg = SHAPES[shape]
    cfg = dict(cfg)
    if layers:
        cfg["num_hidden_layers"] = int(layers[0])
    tok = byte_tokenizer()
    ensure_pad_token(tok)
    common = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = (LlamaConfig if kind == "llama" else OPTConfig)(**cfg, **common)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = (LlamaForCausalLM if kind == "llama" else OPTForCausalLM)(config)
    finally:
        torch.set_default_dtype(default)
    return model, tok


def lora_config(setting: Setting) -> Any:
    from unlearn.config import LoraConfig

    return LoraConfig(r=setting.lora_r, alpha=2.0 * setting.lora_r, target_modules="all-linear")


_SHIPPED: dict[str, Any] = {}


def dense_attention(on: bool = True) -> None:
    """This process's packed forwards as before unlearn.models.attention (on) or as shipped (off):
    bins chosen by the dense attention's cost (rows x width^2), and no units handed to attention,
    which then runs SDPA over each bin's whole mask."""
    from unlearn.models import attention, forward, pack

    _SHIPPED.setdefault("inputs", forward.packed_inputs)
    _SHIPPED.setdefault("cost", pack.layout_cost)
    inputs, cost = _SHIPPED["inputs"], _SHIPPED["cost"]
    if not on:
        forward.packed_inputs, pack.layout_cost = inputs, cost
        return
    forward.packed_inputs = lambda model, packed: {
        k: v for k, v in inputs(model, packed).items() if k != attention.UNITS_KWARG}
    pack.layout_cost = lambda rows, width, hidden_size, scores=None: cost(rows, width, hidden_size)


def segment_slices(on: bool = True) -> None:
    """The step's objective slices each segment's logits (on: as before
    unlearn.objective.context.split_positions, a whole-shape zero fill per segment in the backward),
    or takes them from one split (off, as shipped)."""
    from unlearn.objective import context

    _SHIPPED.setdefault("split", context.split_positions)
    context.split_positions = (lambda logits, spans: {k: logits[s] for k, s in spans.items()}) if on \
        else _SHIPPED["split"]


def peft_lora_forward(model: Any, on: bool = True) -> None:
    """The LoRA layers of `model` run peft's own forward (on), or unlearn.models.lora's fused one."""
    from unlearn.models.lora import fuse_lora_scaling, lora_layers

    if on:
        for m in lora_layers(model):
            m.__dict__.pop("forward", None)
    else:
        fuse_lora_scaling(model)


# --------------------------------------------------------------------------------------------
# unlearn as shipped


class UnlearnStep:
    """`unlearn` as shipped: the run's own preparation (unlearn.train.master_weights, so a full
    fine-tune of half-precision weights trains fp32 weights under autocast; prepare_policy) and its own
    step (unlearn.train.train_step: forward, objective, backward, clip at 1.0, AdamW), one
    micro-batch a step, no learning-rate schedule. Only the model loading, the data and the
    benchmark's switches (chunk_vocab, compile) are the harness's own."""

    def __init__(self, setting: Setting, model: Any, tokenizer: Any, data: dict[str, list]):
        from unlearn.config import TrainConfig
        from unlearn.data import Encoder, Example, StepBatcher, encode_examples
        from unlearn.distributed import new_accelerator
        from unlearn.models import add_lora, base_model, forward
        from unlearn.objective import Objective
        from unlearn.train import master_weights, prepare_policy

        s = self.setting = setting
        if not s.chunk_vocab:
            forward.CHUNK_ELEMENTS = 2**62
        if not s.unit_attention:
            dense_attention()
        objective = Objective(dict(s.objective))
        encoder = Encoder(tokenizer, "qa", s.seq_len)
        forget = [Example(p, r) for p, r in data["forget"]]
        retain = [Example(p, r) for p, r in data["retain"]]
        batcher = StepBatcher(
            encoder, forget=encode_examples(encoder, forget), forget_prompts=[e.prompt for e in forget],
            retain=encode_examples(encoder, retain), mismatch_pool=list(data["pool"]), segments=objective.segments,
            batch_size=s.batch_size, k=s.k, seed=s.seed,
        )
        mixed_precision = s.mixed_precision
        if s.lora:
            model = add_lora(model, lora_config(s))
            if not s.fuse_lora:
                peft_lora_forward(model)
        else:
            model.requires_grad_(True)
            # As `unlearn run`: half-precision weights train as fp32 master weights under autocast.
            mixed_precision = master_weights(model, mixed_precision, "auto")
        accelerator = new_accelerator(mixed_precision, cpu=not torch.cuda.is_available())
        train = TrainConfig(lr=s.lr, batch_size=s.batch_size, mixed_precision=mixed_precision,
                            gradient_checkpointing=s.gradient_checkpointing, pack_rows=s.pack_rows)
        self.parts, _ = prepare_policy(accelerator, model, objective, batcher, train,
                                       fused=None if s.fused_adamw else False)
        if s.compile:  # the policy's decoder, and the reference copy's (full fine-tune) like it
            for m in [self.parts.inner.model] + ([self.parts.reference.copy] if self.parts.reference and
                                                 self.parts.reference.copy is not None else []):
                base = base_model(m)
                base.model = torch.compile(base.get_decoder(), dynamic=True)
        self.model = model

    def info(self) -> dict[str, Any]:
        inner = self.parts.inner
        return {"fast_logits": inner.fast, "packed_rows": inner.pack,
                "trainable_parameters": sum(p.numel() for p in self.parts.params)}

    def step(self, index: int) -> dict[str, Any]:
        from unlearn.models import computed_tokens
        from unlearn.train import step as train_step_module

        out = train_step_module.train_step(self.parts, index)
        batch = self.parts.batcher.batch(index)
        computed = computed_tokens(self.model, batch.input_ids, batch.attention_mask, self.parts.inner.pack)
        return {"loss": out.values.get("loss", float("nan")), "terms": {k: v for k, v in out.values.items() if k not in ("loss", "forget_nll")},
                "tokens": out.tokens, "padded_tokens": computed, "rows": int(batch.input_ids.shape[0]),
                "skipped": out.nonfinite}


# --------------------------------------------------------------------------------------------
# The authors' compute pattern


class AuthorsStep:
    """The compute pattern of the authors' script (github.com/kevinyaobytedance/llm_unlearn,
    unlearn_harm.py and utils.py, as of commit 1143a5b), re-expressed, same model weights, same
    weights of the three terms and the same k:

    - unlearn_harm.py `main`: the policy in fp32 (`from_pretrained` default dtype), optionally with
      a peft adapter; the reference `pretrained_model` is a SECOND full fp32 copy loaded from the
      same weights (also with LoRA); AdamW on `model.parameters()`, linear schedule, no clipping,
      no mixed precision. Per step: `get_answer_loss("ga", bad_batch)`, `get_rand_ans_loss(...,
      K=5)`, `compute_kl(pretrained_model, model, normal_batch)`, weighted sum
      (bad 0.5, random 1, normal 1), one backward, optimizer step.
    - utils.py `create_pku_dataloader_from_dataset` / `create_truthfulqa_dataloader`: every text
      "### Question: {q}\\n ### Answer: {a}" tokenized with `padding="max_length"` (here max
      length = the benchmark's seq_len; the script uses the tokenizer's maximum, which for OPT is
      2048, so this is the favourable case for them); `DataCollatorForLanguageModeling` labels.
    - `get_answer_loss`: one forward of the batch, full-vocabulary logits at every position,
      `CrossEntropyLoss(reduction="none")` per row over all positions, weighted to the answer.
    - `get_rand_ans_loss`: K random answers (`random.sample`, shared by the batch), decode each
      forget row, rebuild the question, tokenize B*K texts padded to max length, one forward
      through `get_answer_loss("gd")`.
    - `compute_kl`: policy forward WITH labels (so the model also computes its own LM loss),
      reference forward with labels under no_grad, softmax of both over the full vocabulary at
      every position, `-(p * log(q + 1e-12)).sum(-1).mean()`.

    Deviations, none of which changes the amount of computation: the pad id for masking is the
    tokenizer's (their code hard-codes OPT's 1), the random answers are drawn from the benchmark's
    pool with a seeded generator, and their LoRA (AdaLoRA r=32 on q_proj, v_proj) is replaced by
    the same plain LoRA as `unlearn`'s LoRA variant so both train the same parameters (AdaLoRA's
    rank allocation would only add work on their side), run by peft's own LoRA forward as theirs is
    (not unlearn.models.lora's fused one, which `add_lora` gives).
    """

    TEMPLATE = "### Question: {q}\n ### Answer: {a}"

    def __init__(self, setting: Setting, model: Any, tokenizer: Any, data: dict[str, list]):
        from transformers import DataCollatorForLanguageModeling

        from unlearn.models import add_lora

        s = self.setting = setting
        if set(s.objective) != set(PAPER_WEIGHTS):
            raise ValueError("the authors' pattern exists only for the paper's objective ga + mismatch + kl")
        self.tok = tokenizer
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        model = model.float()  # from_pretrained without a dtype: fp32
        # pretrained_model = AutoModelForCausalLM.from_pretrained(args.model_name): same weights, fp32.
        self.reference = copy.deepcopy(model).to(self.device)
        self.reference.eval()  # from_pretrained returns eval mode; it is never put in train mode
        if s.lora:
            model = add_lora(model, lora_config(s))
            peft_lora_forward(model)  # their script gets peft's own LoRA forward, not unlearn's fused one
        model.to(self.device)
        model.train()
        if s.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            if hasattr(model, "enable_input_require_grads"):
                model.enable_input_require_grads()
        self.model = model
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=s.lr)
        self.collator = DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
        self.pad = tokenizer.pad_token_id
        self.forget = [self._encode(q, a, prefix_loc=True) for q, a in data["forget"]]
        self.normal = [self._encode(q, a) for q, a in data["retain"]]
        self.normal_ans = list(data["pool"])
        self.rng = random.Random(s.seed)
        self.weights = dict(s.objective)

    def info(self) -> dict[str, Any]:
        return {"trainable_parameters": sum(p.numel() for p in self.model.parameters() if p.requires_grad)}

    def _tokenize(self, text: str) -> dict[str, list[int]]:
        if self.setting.pad == "longest":  # nothing padded here: the collator pads each batch to its longest row
            return self.tok(text, truncation=True, max_length=self.setting.seq_len)
        return self.tok(text, truncation=True, padding="max_length", max_length=self.setting.seq_len)

    def _encode(self, q: str, a: str, prefix_loc: bool = False) -> dict[str, Any]:
        t = self._tokenize(self.TEMPLATE.format(q=q, a=a))
        out = {"input_ids": t["input_ids"], "attention_mask": t["attention_mask"]}
        if prefix_loc:  # create_pku_dataloader_from_dataset: start_locs from the padded prefix
            out["start_locs"] = len(self._tokenize(self.TEMPLATE.format(q=q, a=""))["input_ids"]) - 1
        return out

    def _batch(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self.collator(items)

    def answer_loss(self, operation: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """utils.get_answer_loss."""
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        labels = batch["labels"].to(self.device)
        outputs = self.model(ids, attention_mask=mask)
        loss_fct = torch.nn.CrossEntropyLoss(reduction="none")
        shift_logits = outputs.logits[:, :-1, :]
        shift_labels = labels[:, 1:]
        losses = []
        for bid in range(ids.shape[0]):
            one_inp, one_st = ids[bid], int(batch["start_locs"][bid])
            position_loss = loss_fct(shift_logits[bid], shift_labels[bid])
            if operation == "ga":
                position_loss = -position_loss
            position_weight = torch.zeros_like(one_inp)
            position_weight[one_st:] = 1
            position_weight[mask[bid] == 0] = 0  # their `one_inp == 1`: OPT's pad id
            if position_weight.sum() > 0:
                position_weight = position_weight / position_weight.sum()
            losses.append((position_weight[:-1] * position_loss).sum())
        return torch.stack(losses).mean()

    def rand_ans_loss(self, bad_batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """utils.get_rand_ans_loss."""
        rand_ans_list = self.rng.sample(self.normal_ans, k=self.setting.k)
        features = []
        for row in bad_batch["input_ids"]:
            ori_text = self.tok.decode(row)
            question = ori_text.split("###")[1].split("Question:")[-1].strip()
            question_prefix = f"### Question: {question}\n ### Answer: "
            tokenized_question_prefix = self._tokenize(question_prefix)
            start_loc = len(tokenized_question_prefix)  # their bug: the number of keys, 2
            for rand_ans in rand_ans_list:
                t = self._tokenize(f"{question_prefix}{rand_ans}")
                features.append({"input_ids": t["input_ids"], "attention_mask": t["attention_mask"],
                                 "start_locs": start_loc})
        batch = self._batch(features)
        self._random_tokens = int(batch["attention_mask"].sum())
        self._random_positions = batch["input_ids"].numel()
        return self.answer_loss("gd", batch)

    def compute_kl(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """utils.compute_kl."""
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device)
        labels = batch["labels"].to(self.device)
        normal_outputs = self.model(ids, attention_mask=mask, labels=labels)
        with torch.no_grad():
            pretrained_outputs = self.reference(ids, attention_mask=mask, labels=labels)
        prob_p = torch.nn.functional.softmax(pretrained_outputs.logits, -1)
        prob_q = torch.nn.functional.softmax(normal_outputs.logits, -1)
        return -(prob_p * torch.log(prob_q + 1e-12)).sum(-1).mean()

    def step(self, index: int) -> dict[str, Any]:
        s = self.setting
        b = s.batch_size
        pick = random.Random(s.seed * 1_000_003 + index)
        bad_items = [self.forget[pick.randrange(len(self.forget))] for _ in range(b)]
        normal_items = [self.normal[pick.randrange(len(self.normal))] for _ in range(b)]
        bad_batch = self._batch(bad_items)
        normal_batch = self._batch(normal_items)
        bad_loss = self.answer_loss("ga", bad_batch)
        random_loss = self.rand_ans_loss(bad_batch)
        normal_loss = self.compute_kl(normal_batch)
        loss = self.weights["ga"] * bad_loss + self.weights["mismatch"] * random_loss + self.weights["kl"] * normal_loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad()
        rows = b * (2 + s.k)
        real = int(bad_batch["attention_mask"].sum()) + self._random_tokens + int(normal_batch["attention_mask"].sum())
        computed = bad_batch["input_ids"].numel() + self._random_positions + normal_batch["input_ids"].numel()
        return {"loss": float(loss.detach()), "tokens": real, "padded_tokens": computed, "rows": rows}
