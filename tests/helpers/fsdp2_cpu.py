"""FSDP2 on CPU (gloo), run by tests/test_distributed.py under torchrun with two processes.

accelerate selects FSDP only on GPUs, so this drives unlearn.distributed's pieces directly: shard
the policy ResponseLM (make_shardable + accelerate's fsdp2_prepare_model, as accelerate.prepare does)
and the frozen reference copy (prepare_reference), run one fused step of the paper's objective, and
compare the loss and the gathered weights with the same step unsharded in one process."""
import copy
from types import SimpleNamespace
import torch, torch.distributed as dist
dist.init_process_group("gloo")
rank = dist.get_rank()
from accelerate.utils import FullyShardedDataParallelPlugin
from unlearn.config import ModelConfig
from unlearn.models import load_model, Reference
from unlearn.models import ResponseLM
from unlearn.objective import StepContext, Objective
from unlearn.data import Encoder, StepBatcher, encode_examples, Example
from unlearn.distributed import make_shardable, prepare_reference
from accelerate.utils.fsdp_utils import fsdp2_prepare_model

plugin = FullyShardedDataParallelPlugin(fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
                                        reshard_after_forward=True, cpu_ram_efficient_loading=False,
                                        state_dict_type="FULL_STATE_DICT")
acc = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), device=torch.device("cpu"), mixed_precision="no",
                      is_main_process=rank == 0, parallelism_config=None, is_fsdp2=True,
                      distributed_type=None, num_processes=2)
from accelerate.utils import DistributedType
acc.distributed_type = DistributedType.FSDP

model, tok = load_model(ModelConfig(name="tiny-random-llama"))
plain = copy.deepcopy(model)
model_before = {k: v.clone() for k, v in model.state_dict().items()}
enc = Encoder(tok, "qa", 96)
forget = [Example(f"secret {i}?", f"answer {i}") for i in range(4)]
retain = [Example(f"fact {i}?", f"known {i}") for i in range(4)]
def batcher(r, w, b):
    return StepBatcher(enc, forget=encode_examples(enc, forget), forget_prompts=[e.prompt for e in forget],
                       retain=encode_examples(enc, retain), mismatch_pool=[e.response for e in retain],
                       batch_size=b, k=2, seed=0, rank=r, world_size=w)
objective = Objective({"ga": 0.5, "mismatch": 1.0, "kl": 1.0})

ref = Reference.build(model)
policy = make_shardable(ResponseLM(model))
assert policy._no_split_modules == ["LlamaDecoderLayer"]
policy = fsdp2_prepare_model(acc, policy)
ref_mod = prepare_reference(acc, ResponseLM(ref.copy))
from torch.distributed.fsdp import FSDPModule
for module in (policy, ref_mod):  # the root and every decoder layer are shard units
    assert isinstance(module, FSDPModule) and all(isinstance(layer, FSDPModule) for layer in module.model.model.layers)
for module in (policy, ref_mod):  # each rank holds about half of the weights
    local = sum(p.to_local().numel() for p in module.parameters())
    assert local < 0.55 * sum(p.numel() for p in plain.parameters()), local
opt = torch.optim.AdamW(policy.parameters(), lr=1e-3)
b = batcher(rank, 2, 1).batch(0)
ctx = StepContext(policy, b, lambda i, m, l: ref_mod(i, m, l), objective.reference_segments)
loss, values = objective(ctx)
loss.backward()
opt.step()
# full weights after one step, gathered
from torch.distributed.checkpoint.state_dict import get_model_state_dict, StateDictOptions
sd = get_model_state_dict(policy, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
vals = torch.tensor([float(loss.detach())] + [float(v.detach()) for v in values.values()])
dist.all_reduce(vals); vals /= 2
if rank == 0:
    # the same step unsharded, one process, global batch 2
    ref2 = Reference.build(plain)
    lm = ResponseLM(plain)
    opt2 = torch.optim.AdamW(plain.parameters(), lr=1e-3)
    b2 = batcher(0, 1, 2).batch(0)
    ctx2 = StepContext(lm, b2, lambda i, m, l: ResponseLM(ref2.copy)(i, m, l), objective.reference_segments)
    loss2, values2 = objective(ctx2)
    loss2.backward(); opt2.step()
    one = [float(loss2.detach())] + [float(v.detach()) for v in values2.values()]
    assert all(abs(a - b) < 1e-5 for a, b in zip(vals.tolist(), one)), (vals.tolist(), one)
    worst = max((sd["model." + k] - v).abs().max().item() for k, v in plain.state_dict().items())
    moved = max((sd["model." + k] - v).abs().max().item() for k, v in model_before.items())
    assert worst < 1e-4 and moved > 100 * worst, (worst, moved)
    print(f"FSDP2 OK: loss {vals.tolist()[0]:.6f} (one process {one[0]:.6f}); weights within {worst:.1e}")
dist.destroy_process_group()
