"""Several processes through accelerate: DDP, FSDP, DeepSpeed ZeRO-3.

What the training loop needs beyond `accelerator.prepare`:

- one all-reduce per step of the logged values, the token count and the stop flags, so that every
  rank takes the same decision (skip a non-finite step, stop on a signal or the stopping rule);
  a rank that decides alone leaves the others waiting in the next collective forever;
- the frozen reference model prepared like the policy: under FSDP wrapped with the same plugin
  settings, under ZeRO-3 its own DeepSpeed engine with the same stage (so it is sharded too);
  with LoRA there is no copy at all (the policy with its adapters disabled);
- the final weights gathered from the shards before saving.

The engines other than DDP need GPUs; see docs/distributed.md for what was run where.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable

import torch

from unlearn.errors import UnlearnError


def new_accelerator(mixed_precision: str, cpu: bool) -> Any:
    """The run's Accelerator. accelerate keeps its settings in a process-wide singleton that refuses
    a different mixed precision later in the same process: a second run there (the Python API, a
    test session) whose autocast differs, e.g. a bf16 full fine-tune after an fp32 one
    (train.setup.master_weights), would fail. Such settings are cleared first; the process group
    (PartialState) is kept."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    state = AcceleratorState._shared_state
    if state and state.get("_mixed_precision", mixed_precision) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)
    return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


def end_processes() -> None:
    """At the end of a command that trained under several processes, once it succeeded: destroy the
    process group. PyTorch asks each process to do so before it exits (NCCL can otherwise leak or
    hang at exit; the GPU check's one-GPU DDP run warned of it). Not after a failure: a rank that
    failed must not wait in a collective for the others (torchtitan does the same). Not in the Python
    API either, where a second run in the same process needs the group that accelerate keeps."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def engine(accelerator: Any) -> str:
    """'single', 'ddp', 'fsdp' or 'deepspeed'."""
    from accelerate.utils import DistributedType

    t = accelerator.distributed_type
    if t == DistributedType.DEEPSPEED:
        return "deepspeed"
    if t == DistributedType.FSDP:
        return "fsdp"
    return "ddp" if accelerator.num_processes > 1 else "single"


def sharded(accelerator: Any) -> bool:
    """True when parameters are split across processes (no rank holds the whole model)."""
    return engine(accelerator) in ("fsdp", "deepspeed")


def clip_gradients(accelerator: Any, params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip the gradient of `params` to norm max_norm as torch's clip_grad_norm_ does (through the
    engine, as accelerate's clip_grad_norm_); returns the norm before clipping.

    Where every process holds whole gradients (one process, DDP), the multiply runs only when it
    changes them: torch's clip_grad_norm_ multiplies every gradient by min(1, max_norm / (norm +
    1e-6)) even when that is 1, a pass over all of them (42 ms of a profiled full fine-tune step of
    SmolLM2-135M on 2 CPU cores). The same coefficient decides here, so the result is the same."""
    from accelerate.utils import DistributedType

    if sharded(accelerator) or accelerator.distributed_type == DistributedType.XLA:
        return float(accelerator.clip_grad_norm_(params, max_norm))
    accelerator.unscale_gradients()  # fp16: as accelerate does before clipping
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if max_norm / (float(norm) + 1e-6) < 1.0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return float(norm)


def check_engine_options(accelerator: Any, *, save_every: int, merge: bool, grad_accum: int, where: Any) -> None:
    """Refuse, before training, what this version does not do under FSDP/DeepSpeed."""
    if not sharded(accelerator):
        return
    name = engine(accelerator)
    if name == "deepspeed" and grad_accum > 1:
        # DeepSpeed steps inside backward and counts micro-batches itself; the loop's own
        # accumulation (and its loss / grad_accum) would be applied twice.
        raise UnlearnError(
            f"{where('train.grad_accum')}: train.grad_accum > 1 under DeepSpeed is not supported; "
            "raise train.batch_size or the number of processes instead"
        )
    if save_every:
        raise UnlearnError(
            f"{where('train.save_every')}: resumable checkpoints under {name} are not supported yet "
            "(the optimizer state is sharded); set train.save_every: 0, or train with DDP"
        )
    if merge:
        raise UnlearnError(
            f"{where('model.merge')}: model.merge under {name} is not supported; save the adapter "
            "and merge it afterwards (see docs/distributed.md)"
        )


def configure_engine(accelerator: Any, *, batch_size: int, max_grad_norm: float | None) -> None:
    """Fill in what DeepSpeed needs before `prepare` and cannot learn from the loop (which passes
    no dataloader): the micro-batch size per process, and gradient clipping, which DeepSpeed does
    itself inside its step (train.max_grad_norm, unless a DeepSpeed config file sets it)."""
    if engine(accelerator) != "deepspeed":
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    if config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
        config["train_micro_batch_size_per_gpu"] = batch_size
    if config.get("gradient_clipping", "auto") == "auto":
        config["gradient_clipping"] = float(max_grad_norm or 0.0)


def make_shardable(module: torch.nn.Module) -> torch.nn.Module:
    """Let FSDP's auto-wrap policy see into a ResponseLM: it finds the layers to shard one by one
    (`_no_split_modules`, e.g. LlamaDecoderLayer) and the embeddings on the module it is given,
    which is the wrapper, not the transformers model inside."""
    inner = getattr(module, "model", None)
    base = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    if base is None:
        return module
    module._no_split_modules = list(getattr(base, "_no_split_modules", None) or [])
    for name in ("get_input_embeddings", "get_output_embeddings"):
        if hasattr(base, name):
            object.__setattr__(module, name, getattr(base, name))
    return module


def sum_across(accelerator: Any, values: list[float]) -> list[float]:
    """Elementwise sum of `values` over all processes (one collective); the values themselves
    when there is one process. NaN and inf propagate, so a non-finite value anywhere is seen
    everywhere."""
    if accelerator.num_processes == 1:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=accelerator.device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


def prepare_reference(accelerator: Any, module: torch.nn.Module) -> torch.nn.Module:
    """Prepare the frozen reference copy (a ResponseLM) like the policy, for inference only."""
    kind = engine(accelerator)
    module.eval()
    module.requires_grad_(False)
    make_shardable(module)
    if kind == "deepspeed":
        return _prepare_deepspeed(accelerator, module)
    if kind == "fsdp":
        return _prepare_fsdp(accelerator, module)
    return module.to(accelerator.device)


def _prepare_deepspeed(accelerator: Any, module: torch.nn.Module) -> torch.nn.Module:
    """An inference-only DeepSpeed engine with the policy's ZeRO stage, so that under ZeRO-3 the
    reference is partitioned across ranks like the policy (the pattern TRL uses for DPO); under
    ZeRO-1/2 the reference is small enough to replicate, and is given stage 0."""
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage != 3:
        config.setdefault("zero_optimization", {})["stage"] = 0
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    hidden = getattr(getattr(module, "model", None), "config", None)
    hidden = getattr(hidden, "hidden_size", None)
    if hidden is not None and stage == 3:
        zo = config["zero_optimization"]
        zo.setdefault("reduce_bucket_size", hidden * hidden)
        zo.setdefault("stage3_param_persistence_threshold", 10 * hidden)
        zo.setdefault("stage3_prefetch_bucket_size", int(0.9 * hidden * hidden))
    for key in ("reduce_bucket_size", "stage3_param_persistence_threshold", "stage3_prefetch_bucket_size"):
        if config.get("zero_optimization", {}).get(key) == "auto":
            config["zero_optimization"].pop(key)
    if config.get("train_micro_batch_size_per_gpu") == "auto":
        config["train_micro_batch_size_per_gpu"] = 1
    if config.get("train_batch_size") == "auto":
        config.pop("train_batch_size")
    if config.get("gradient_accumulation_steps") == "auto":
        config["gradient_accumulation_steps"] = 1
    engine_, *_ = deepspeed.initialize(model=module, config=config)
    engine_.eval()
    return engine_


def _prepare_fsdp(accelerator: Any, module: torch.nn.Module) -> torch.nn.Module:
    """Shard the reference with the policy's FSDP plugin settings (auto-wrap policy, mixed
    precision, offload). accelerate's prepare_model(evaluation_mode=True) does not shard, so this
    wraps by hand, as accelerate does for the policy."""
    plugin = accelerator.state.fsdp_plugin
    if getattr(accelerator, "is_fsdp2", False):
        from accelerate.utils.fsdp_utils import fsdp2_prepare_model

        return fsdp2_prepare_model(accelerator, module)
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    plugin.set_auto_wrap_policy(module)
    return FSDP(
        module,
        sharding_strategy=plugin.sharding_strategy or plugin.reshard_after_forward,
        cpu_offload=plugin.cpu_offload,
        auto_wrap_policy=plugin.auto_wrap_policy,
        mixed_precision=plugin.mixed_precision_policy,
        sync_module_states=plugin.sync_module_states,
        backward_prefetch=plugin.backward_prefetch,
        forward_prefetch=plugin.forward_prefetch,
        use_orig_params=plugin.use_orig_params,
        limit_all_gathers=plugin.limit_all_gathers,
        device_id=accelerator.device,
    )


def full_state_dict(accelerator: Any, policy: Any) -> dict[str, torch.Tensor] | None:
    """Under FSDP/DeepSpeed, the whole state dict of the model inside the ResponseLM, gathered on
    the main process (every process must call this). None when no gathering is needed."""
    if not sharded(accelerator):
        return None
    state = accelerator.get_state_dict(policy)
    if not accelerator.is_main_process:
        return None
    prefix = "model."
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# --------------------------------------------------------------------------------------------
# What the training loop asks of several processes


def agree(accelerator: Any, sums: dict[str, float], tokens: int, stop: bool) -> tuple[dict[str, float], int, bool]:
    """The step's values averaged over processes, tokens summed, stop requests or-ed: one
    collective, after which every rank decides the same (skip, stop, log)."""
    keys = list(sums)
    n = accelerator.num_processes
    totals = sum_across(accelerator, [sums[k] for k in keys] + [float(tokens), float(stop)])
    return {k: totals[i] / n for i, k in enumerate(keys)}, int(totals[-2]), totals[-1] > 0


def nonfinite_terms(accelerator: Any, loss: torch.Tensor, values: dict[str, torch.Tensor]) -> list[str]:
    """Terms whose value is not finite on any rank (one small collective under several
    processes); ["loss"] when only their weighted sum overflows; [] when all is well."""
    names = list(values)
    local = [float(v.detach()) for v in values.values()] + [float(loss.detach())]
    totals = sum_across(accelerator, [0.0 if math.isfinite(x) else 1.0 for x in local])
    bad = [n for n, t in zip(names, totals) if t > 0]
    return bad or (["loss"] if totals[-1] > 0 else [])


def on_main(accelerator: Any, fn: Callable[[], Any]) -> Any:
    """Run fn on the main process; every process learns whether it failed (one collective, which
    is also the barrier), so a failure there (a full disk) stops every rank instead of leaving
    the others waiting."""
    result, error = None, None
    if accelerator.is_main_process:
        try:
            result = fn()
        except Exception as e:  # re-raised below, after the others know
            error = e
    failed = sum_across(accelerator, [0.0 if error is None else 1.0])[0] > 0
    if error is not None:
        raise error
    if failed:
        raise UnlearnError("the main process could not write the run's files (its message says why)")
    return result


def reference_forward(accelerator: Any, policy: Any, inner: Any, reference: Any) -> Callable[..., Any] | None:
    """The reference forward for StepContext (response-position logits of the frozen model), from
    a models.Reference: its frozen copy prepared like the policy, or the policy itself (through the
    engine's wrapper) with the LoRA adapters disabled."""
    from unlearn.models import ResponseLM

    if reference is None:
        return None
    if reference.copy is not None:
        ref_lm = ResponseLM(reference.copy)
        ref_lm.fast = inner.fast
        ref_lm.pack = inner.pack
        ref_module = prepare_reference(accelerator, ref_lm)

        def copy_fn(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, **kw: Any):
            with accelerator.autocast():
                return ref_module(ids, mask, labels, **kw)

        return copy_fn

    def adapters_off_fn(ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, **kw: Any):
        # Through the engine's wrapper, so that FSDP / ZeRO-3 gather the shards they hold.
        # kw: hidden_layers=(...) for terms that read activations (rmu).
        with accelerator.autocast(), reference.model():
            return policy(ids, mask, labels, **kw)

    return adapters_off_fn
