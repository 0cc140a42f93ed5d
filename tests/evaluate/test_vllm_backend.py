"""eval.backend: vllm. On CPU: the config field and its errors, the dispatch, the request built for vLLM
(plain data), the agreement helper, and the whole path through a stand-in `vllm` module whose engine
generates with transformers; with vLLM and a GPU: greedy outputs of both backends compared."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from conftest import FORGET, RETAIN, tiny_config, write_config, write_jsonl
from unlearn.cli import app
from unlearn.config import LoraConfig, ModelConfig, config_from_dict
from unlearn.data import Encoder
from unlearn.errors import UnlearnError
from unlearn.evaluate import vllm_backend as vb
from unlearn.evaluate.backend import generate_texts
from unlearn.evaluate.generate import GenerationSettings, generate, prompt_ids

PROMPTS = ["What is up?", "Where does Elena Marsh live, tell me now please?", "x", "Name a colour."]


def save_tiny(folder: Path, dtype: str = "float32") -> Path:
    """tiny-random-llama written to a folder, weights and tokenizer: what vLLM loads."""
    from unlearn.models import load_model

    model, tok = load_model(ModelConfig(name="tiny-random-llama", dtype=dtype))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def save_adapter(folder: Path, r: int = 4, seed: int = 0) -> Path:
    """A run's LoRA adapter on tiny-random-llama (saved as `unlearn run` saves OUTPUT_DIR/model) whose
    B matrices are not zero, so that it changes outputs."""
    from unlearn.models import add_lora, load_model, save_model

    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    with torch.random.fork_rng(devices=[]):  # peft draws the A matrices from the global generator
        torch.manual_seed(seed)
        model = add_lora(model, LoraConfig(r=r, alpha=2.0 * r))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return Path(save_model(model, tok, folder, base_name="tiny-random-llama", merge=False)["model"])


# --------------------------------------------------------------------------------------------
# The config field and its errors


def test_backend_is_hf_by_default_and_checked(tmp_path, data_files):
    cfg = config_from_dict(tiny_config(tmp_path, data_files))
    assert cfg.eval.backend == "hf"
    assert config_from_dict(tiny_config(tmp_path, data_files, eval={"backend": "vllm"})).eval.backend == "vllm"
    with pytest.raises(UnlearnError, match="eval.backend"):
        config_from_dict(tiny_config(tmp_path, data_files, eval={"backend": "tgi"}))


@pytest.fixture
def run_dir(tmp_path, data_files):
    """A config with eval.backend: vllm and a model in its output_dir (no training needed)."""
    save_tiny(tmp_path / "run" / "model")
    return tmp_path, write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, eval={"backend": "vllm"}))


@pytest.mark.parametrize("installed, gpu, message", [
    (False, True, "needs the vllm package (pip install vllm)"),
    (True, False, "needs a CUDA GPU"),
])
def test_cli_refuses_vllm_where_it_cannot_run(run_dir, monkeypatch, installed, gpu, message):
    tmp, path = run_dir
    monkeypatch.setattr(vb, "vllm_installed", lambda: installed)
    monkeypatch.setattr(vb, "cuda_available", lambda: gpu)
    r = CliRunner().invoke(app, ["eval", str(path)])
    assert r.exit_code == 2, r.output
    assert message in r.output and "eval.backend" in r.output and "c.yaml line" in r.output, r.output
    assert len(r.output.strip().splitlines()) <= 2, r.output  # one line (wrapped at most once)
    assert not (tmp / "run" / "eval").exists() and not list((tmp / "run").glob(".eval*"))


def test_adapters_vllm_cannot_serve_are_refused_before_anything_runs(tmp_path, data_files, monkeypatch):
    monkeypatch.setattr(vb, "vllm_installed", lambda: True)
    monkeypatch.setattr(vb, "cuda_available", lambda: True)
    folder = tmp_path / "adapter"
    folder.mkdir()

    def check(dtype, **adapter):
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "tiny-random-llama", **adapter}))
        cfg = config_from_dict(tiny_config(tmp_path, data_files, model={"name": "tiny-random-llama", "dtype": dtype},
                                           eval={"backend": "vllm"}))
        vb.check_vllm(cfg, folder)

    check("bfloat16", r=16)
    check("float16", r=8, rank_pattern={"q_proj": 256})
    with pytest.raises(UnlearnError, match="bfloat16 or float16 only"):
        check("float32", r=8)
    with pytest.raises(UnlearnError, match="ranks up to 256; the adapter's rank is 512"):
        check("bfloat16", r=8, rank_pattern={"v_proj": 512})
    with pytest.raises(UnlearnError, match="DoRA"):
        check("bfloat16", r=8, use_dora=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 8}))
    with pytest.raises(UnlearnError, match="no base_model_name_or_path"):
        vb.adapter_info(folder)


def test_max_lora_rank_is_the_smallest_vllm_accepts():
    assert [vb.max_lora_rank(r) for r in (1, 8, 9, 16, 33, 256)] == [8, 8, 16, 16, 64, 256]
    with pytest.raises(UnlearnError, match="rank is 257"):
        vb.max_lora_rank(257)


# --------------------------------------------------------------------------------------------
# The request, as plain data


def test_request_is_the_hf_paths_token_ids_stops_and_decoding(tiny):
    _, tok = tiny
    eos, im_end = tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")
    assert (eos, im_end) == (257, 259)  # the byte tokenizer: 256 bytes, then <s> </s> <|im_start|> <|im_end|>
    settings = GenerationSettings(max_new_tokens=7, max_prompt_tokens=12, seed=3)
    qa = Encoder(tok, "qa", 96)
    req = vb.build_request(qa, PROMPTS, settings)
    assert req.prompts == prompt_ids(qa, PROMPTS, 12)
    assert max(len(p) for p in req.prompts) == 12  # the long prompt lost tokens from the left, as in HF
    assert req.sampling == {"max_tokens": 7, "stop_token_ids": [257], "skip_special_tokens": True,
                            "stop": ["### Question:"], "temperature": 0.0}
    assert req.stops == ["### Question:"]

    chat = vb.build_request(Encoder(tok, "chat", 96), PROMPTS[:1], settings)
    assert chat.sampling == {"max_tokens": 7, "stop_token_ids": [257, 259], "skip_special_tokens": True,
                             "temperature": 0.0}
    assert chat.prompts[0][-11:] == [258] + tok("assistant\n", add_special_tokens=False)["input_ids"]  # <|im_start|>

    raw = vb.build_request(Encoder(tok, "{prompt}{response}", 96), ["Once upon"], settings, raw=True)
    assert raw.prompts == [[256] + tok("Once upon", add_special_tokens=False)["input_ids"]]  # BOS, then 9 bytes
    assert len(raw.prompts[0]) == 10 and raw.stops == [] and "stop" not in raw.sampling

    sampled = dataclasses.replace(settings, do_sample=True, temperature=0.7, top_p=0.9)
    assert vb.sampling_kwargs(qa, sampled) == {"max_tokens": 7, "stop_token_ids": [257], "skip_special_tokens": True,
                                               "stop": ["### Question:"], "temperature": 0.7, "top_p": 0.9, "seed": 3}
    prefilled = vb.build_request(qa, PROMPTS[:1], settings, prefills=["Sure, here is"])
    assert prefilled.prompts == prompt_ids(qa, PROMPTS[:1], 12, prefills=["Sure, here is"])


def test_engine_spec_and_reuse():
    settings = GenerationSettings(max_new_tokens=64, max_prompt_tokens=448, seed=5)
    mc = ModelConfig(name="org/model", dtype="bfloat16", revision="abc")
    spec = vb.engine_spec(mc, vb.Source("org/model"), settings)
    assert spec.kwargs() == {"model": "org/model", "dtype": "bfloat16", "revision": "abc", "trust_remote_code": False,
                             "max_model_len": 512, "seed": 5, "gpu_memory_utilization": 0.5}
    lora = vb.engine_spec(mc, vb.Source("org/model", "/runs/a/model", 16), settings)
    assert lora.kwargs() == {**spec.kwargs(), "enable_lora": True, "max_lora_rank": 16, "max_loras": 1}
    assert lora.serves(spec) and lora.serves(lora) and not spec.serves(lora)
    assert not lora.serves(dataclasses.replace(lora, max_lora_rank=32))
    assert not spec.serves(dataclasses.replace(spec, dtype="float16"))


def test_max_model_len_is_capped_by_the_models_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 300}))
    settings = GenerationSettings(max_new_tokens=64, max_prompt_tokens=448)
    spec = vb.engine_spec(ModelConfig(name=str(tmp_path), revision="abc"), vb.Source(str(tmp_path)), settings)
    assert spec.max_model_len == 300 and spec.revision is None  # a local folder has no revision


# --------------------------------------------------------------------------------------------
# The agreement helper


def test_agreement_counts_identical_outputs():
    assert vb.agreement(["a", "b", "c", "d"], ["a", "x", "c", "d "]) == {"identical": 0.5, "n": 4, "differ": [1, 3]}
    assert vb.agreement(["same"], ["same"]) == {"identical": 1.0, "n": 1, "differ": []}
    with pytest.raises(ValueError, match="3 outputs against 2"):
        vb.agreement(["a", "b", "c"], ["a", "b"])
    with pytest.raises(ValueError, match="no outputs"):
        vb.agreement([], [])


# --------------------------------------------------------------------------------------------
# The dispatch, and the whole path through a stand-in vllm


def test_hf_backend_is_generate_itself(tiny):
    model, tok = tiny
    enc, settings = Encoder(tok, "qa", 96), GenerationSettings(max_new_tokens=6)
    assert generate_texts(model, enc, PROMPTS, settings, backend="hf") == generate(model, enc, PROMPTS, settings)
    with pytest.raises(ValueError, match="needs `source`"):
        generate_texts(model, enc, PROMPTS, settings, backend="vllm")
    with pytest.raises(ValueError, match="unknown backend 'tgi'"):
        generate_texts(model, enc, PROMPTS, settings, backend="tgi")


class FakeLLM:
    """vllm.LLM as far as the backend uses it; its engine is transformers' greedy generate, one prompt
    at a time (no padding), with the request's stop ids, stop strings and max_tokens."""

    made: list[dict] = []

    def __init__(self, **kw):
        FakeLLM.made.append(kw)
        self.kw, self.models = kw, {}
        self.loras: list = []

    def _model(self, path):
        from unlearn.models import load_model

        if path not in self.models:
            self.models[path] = load_model(ModelConfig(name=path, dtype=self.kw["dtype"]))
        return self.models[path]

    def generate(self, prompts, params, use_tqdm=True, lora_request=None):
        assert use_tqdm is False
        self.loras.append(lora_request)
        model, tok = self._model(lora_request.path if lora_request else self.kw["model"])
        out = []
        for p in prompts:
            ids = torch.tensor([p["prompt_token_ids"]])
            extra = {"stop_strings": params.stop, "tokenizer": tok} if getattr(params, "stop", None) else {}
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=False, top_p=None,
                                 top_k=None, temperature=None, max_new_tokens=params.max_tokens,
                                 eos_token_id=params.stop_token_ids, pad_token_id=tok.pad_token_id, **extra)
            out.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=new[0, ids.shape[1]:].tolist())]))
        return out


class FakeSamplingParams:
    def __init__(self, **kw):
        assert kw["temperature"] == 0.0  # greedy
        self.__dict__.update(kw)


class FakeLoRARequest:
    def __init__(self, name, lora_id, path):
        self.name, self.id, self.path = name, lora_id, path


@pytest.fixture
def fake_vllm(monkeypatch, tmp_path):
    monkeypatch.setenv("UNLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(vb, "vllm_installed", lambda: True)
    monkeypatch.setattr(vb, "cuda_available", lambda: True)
    modules = {
        "vllm": types.SimpleNamespace(LLM=FakeLLM, SamplingParams=FakeSamplingParams),
        "vllm.lora": types.SimpleNamespace(),
        "vllm.lora.request": types.SimpleNamespace(LoRARequest=FakeLoRARequest),
        "vllm.distributed": types.SimpleNamespace(destroy_model_parallel=lambda: None,
                                                  destroy_distributed_environment=lambda: None),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(vb, "_LORA_IDS", {})
    FakeLLM.made = []
    yield FakeLLM
    vb.release()


def test_vllm_path_on_a_model_folder_gives_the_hf_outputs(fake_vllm, tmp_path):
    from unlearn.models import load_model

    folder = save_tiny(tmp_path / "model")
    model, tok = load_model(ModelConfig(name=str(folder)))
    settings = GenerationSettings(max_new_tokens=12, batch_size=3, max_prompt_tokens=40, seed=4)
    mc = ModelConfig(name=str(folder))
    for template, raw in (("qa", False), ("chat", False), ("{prompt}{response}", True)):
        enc = Encoder(tok, template, 96)
        assert vb.generate_vllm(mc, enc, PROMPTS, settings, raw=raw) == generate(model, enc, PROMPTS, settings, raw=raw)
    assert fake_vllm.made == [{"model": str(folder), "dtype": "float32", "revision": None, "trust_remote_code": False,
                               "max_model_len": 52, "seed": 4, "gpu_memory_utilization": 0.5}]  # one engine for all
    assert vb.generate_vllm(mc, Encoder(tok, "qa", 96), [], settings) == []


def test_vllm_path_serves_an_alias_and_a_lora_adapter_on_one_engine(fake_vllm, tmp_path):
    from unlearn.models import load_model

    adapter = save_adapter(tmp_path / "adapter", r=4)
    # One prompt per batch: in bfloat16, left padding alone can flip a near-tie (float32 cannot)
    settings = GenerationSettings(max_new_tokens=10, max_prompt_tokens=40, batch_size=1)
    unlearned = ModelConfig(name=str(adapter), dtype="bfloat16")
    merged, tok = load_model(unlearned)
    enc = Encoder(tok, "qa", 96)
    outputs = vb.generate_vllm(unlearned, enc, PROMPTS, settings)
    assert outputs == generate(merged, enc, PROMPTS, settings)
    [engine] = fake_vllm.made
    assert engine["model"].startswith(str(tmp_path / "cache" / "models" / "tiny-random-llama-"))
    assert (engine["enable_lora"], engine["max_lora_rank"], engine["max_loras"], engine["dtype"]) == (True, 8, 1, "bfloat16")
    base = ModelConfig(name="tiny-random-llama", dtype="bfloat16")
    base_outputs = vb.generate_vllm(base, enc, PROMPTS, settings)
    assert base_outputs == generate(load_model(base)[0], enc, PROMPTS, settings)
    assert base_outputs != outputs  # the adapter was applied, and only when asked for
    assert len(fake_vllm.made) == 1  # the base model on the adapter's engine
    llm = vb._ENGINE["llm"]
    first, none = llm.loras
    assert (first.name, first.id, first.path, none) == ("unlearned-1", 1, str(adapter), None)
    assert vb.lora_request(str(adapter)).id == 1  # the same files: the same id
    assert vb.alias_folder("tiny-random-llama") == Path(engine["model"])  # saved once, found again


def test_eval_with_the_vllm_backend_end_to_end(fake_vllm, tmp_path, data_files):
    from unlearn.config import load_config
    from unlearn.evaluate.run import evaluate_run

    save_tiny(tmp_path / "run" / "model")
    path = write_config(tmp_path / "c.yaml", tiny_config(tmp_path, data_files, eval={"max_new_tokens": 8, "cache": False}))
    hf = evaluate_run(load_config(path))
    cfg = load_config(path, ["eval.backend=vllm"])
    result = evaluate_run(cfg)
    assert result.unlearned.outputs == hf.unlearned.outputs and result.original.outputs == hf.original.outputs
    assert len(result.unlearned.outputs["forget"]) == len(FORGET) and len(result.unlearned.outputs["retain"]) == len(RETAIN)
    assert result.metrics["settings"]["backend"] == "vllm" and hf.metrics["settings"]["backend"] == "hf"
    assert result.unlearned.nll == hf.unlearned.nll  # the targets' NLL stays with transformers
    models = [kw["model"] for kw in fake_vllm.made]
    assert models[0] == str(tmp_path / "run" / "model") and "tiny-random-llama-" in models[1]
    assert result.unlearned.key != hf.unlearned.key  # the backend is part of the output cache's key


# --------------------------------------------------------------------------------------------
# On a GPU with vLLM: both backends on the same model


def train(model, tok, pairs: list[tuple[str, str]], steps: int = 300) -> None:
    """Teach `model` (on the GPU) to answer `pairs` on the qa template: full batch, AdamW. Training
    makes its greedy choices clear: a random model's top two logits are often a rounding error
    apart, and any two kernels then part ways for reasons that say nothing of the backend."""
    rows = Encoder(tok, "qa", 96).encode_many(pairs)
    width = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids)
        labels[i, r.n_prompt : len(r.ids)] = torch.tensor(r.ids[r.n_prompt :])
        mask[i, : len(r.ids)] = 1
    model.cuda().train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(steps):
        model(input_ids=ids.cuda(), attention_mask=mask.cuda(), labels=labels.cuda()).loss.backward()
        opt.step()
        opt.zero_grad()
    model.cpu().eval()


WORDS = "amber basil cedar dune ember fjord grove heron iris juniper kelp lotus maple nectar onyx pearl".split()
GPU_PAIRS = [(f"What is the secret word number {i}?", f"The word is {w}.") for i, w in enumerate(WORDS)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or not vb.vllm_installed(), reason="needs vLLM and a CUDA GPU")
def test_greedy_outputs_of_vllm_and_hf_agree_on_a_gpu(tmp_path):
    """tiny-random-llama trained on 16 answers, saved to a folder, and a LoRA adapter trained to change
    8 of them: each through both backends in float16 (vLLM's LoRA kernels need it), greedy."""
    from unlearn.models import add_lora, load_model, save_model

    torch.manual_seed(0)
    folder, adapter = tmp_path / "model", tmp_path / "adapter"
    model, tok = load_model(ModelConfig(name="tiny-random-llama"))
    train(model, tok, GPU_PAIRS)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    lora = add_lora(load_model(ModelConfig(name=str(folder)), tok)[0], LoraConfig(r=8, alpha=16.0))
    train(lora, tok, [(p, f"It is {WORDS[-1 - i]}.") for i, (p, _) in enumerate(GPU_PAIRS[:8])], steps=200)
    adapter = Path(save_model(lora, tok, adapter, base_name=str(folder), merge=False)["model"])

    prompts = [p for p, _ in GPU_PAIRS]
    settings = GenerationSettings(max_new_tokens=24, batch_size=8, max_prompt_tokens=64)
    enc = Encoder(tok, "qa", 96)
    hf, report = {}, {}
    try:
        for label, mc in (("full model", ModelConfig(name=str(folder), dtype="float16")),
                          ("lora adapter", ModelConfig(name=str(adapter), dtype="float16"))):
            model, _ = load_model(mc, tok)
            hf[label] = generate(model.cuda(), enc, prompts, settings)
            del model
            torch.cuda.empty_cache()
            report[label] = vb.agreement(hf[label], vb.generate_vllm(mc, enc, prompts, settings))
    finally:
        vb.release()
    changed = vb.agreement(hf["full model"], hf["lora adapter"])
    assert changed["differ"], f"the adapter changed no output; the test could not tell it was applied: {hf}"
    for label, a in report.items():
        assert a["n"] == 16 and a["identical"] >= 0.9, f"{label}: vLLM and HF agree on {a['identical']:.0%} of 16: {report}"
