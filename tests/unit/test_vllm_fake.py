"""The vllm backend's own logic, on a fake `vllm` module (CI has no GPU and no vLLM).

The fake records what VllmLM asked vLLM for (engine arguments, token prompts, one SamplingParams
per chat, the LoRARequest) and answers out of what it was given, so the tests check the mapping
of GenParams, the adapter requests and that answer i belongs to chat i. The fake keeps the
names and signatures of vllm 0.33.0 (`vllm.LLM.__init__(model, *, dtype, ...)`, `LLM.generate(
prompts, sampling_params, *, use_tqdm, lora_request)`, `SamplingParams` fields, `vllm.lora.request
.LoRARequest(lora_name, lora_int_id, lora_path)`, `RequestOutput.outputs[0].text`). The real
engine is tested in tests/integration/test_vllm_gpu.py (GPU only).
"""
from __future__ import annotations

import json
import sys
import types

import pytest

from adaptlab.errors import AdaptlabError
from adaptlab.lm.base import GenParams
from adaptlab.lm.config import BackendConfig
from adaptlab.lm.registry import make_lm

CHATS = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}]
         for q in ("alpha", "beta", "gamma", "delta")]


class FakeTokenizer:
    """Characters as token ids; a chat template that keeps each message's text."""

    eos_token_id, unk_token_id = 0, 1

    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        assert tokenize is False and add_generation_prompt is True
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def __call__(self, text, add_special_tokens):
        return types.SimpleNamespace(input_ids=[ord(ch) for ch in text])

    def convert_tokens_to_ids(self, token):
        return {"<|im_end|>": 7}.get(token, self.unk_token_id)


class SamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class LoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeLLM:
    """Answers each token prompt with its user turn reversed, plus a tail to cut at a stop."""

    made: list = []

    def __init__(self, model, **kwargs):
        self.init = dict(model=model, **kwargs)
        self.model_config = types.SimpleNamespace(dtype="torch.bfloat16")
        self.calls = []
        FakeLLM.made.append(self)

    def generate(self, prompts, sampling_params, *, use_tqdm=True, lora_request=None):
        self.calls.append(dict(prompts=prompts, params=sampling_params, lora=lora_request))
        outs = []
        for p in prompts:
            text = "".join(map(chr, p["prompt_token_ids"]))
            user = text.split("<user>")[-1].removesuffix("<assistant>")
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(
                text=f" {user[::-1]} END tail ")]))
        return outs


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = FakeLLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    request = types.ModuleType("vllm.lora.request")
    request.LoRARequest = LoRARequest
    for name, mod in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(FakeLLM, "made", [])
    import adaptlab.models.load  # noqa: F401  (binds the real resolve before it is replaced here)
    import adaptlab.models.registry as models

    monkeypatch.setattr(models, "resolve", lambda ref, convert=True: f"/models/{ref}")
    return vllm


def adapter_dir(path, r=8, weights=b"w1"):
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    (path / "adapter_model.safetensors").write_bytes(weights)
    return path


def make(**kwargs):
    cfg = BackendConfig(model="m", backend="vllm", precision=kwargs.pop("precision", "bf16"),
                        vllm_args=kwargs.pop("vllm_args", {}))
    return make_lm(cfg, tokenizer=FakeTokenizer(), **kwargs)


def test_engine_args_dtype_and_name(fake_vllm):
    lm = make(vllm_args={"tensor_parallel_size": 2, "max_model_len": 1024})
    assert FakeLLM.made[-1].init == dict(model="/models/m", dtype="bfloat16",
                                         tensor_parallel_size=2, max_model_len=1024)
    assert lm.name == "vllm:m:bfloat16" and not lm.lora_enabled
    make(precision="auto")
    assert FakeLLM.made[-1].init["dtype"] == "auto"
    with pytest.raises(AdaptlabError, match="takes auto/bf16/fp32"):
        make(precision="int8")


def test_answers_in_input_order_cut_at_stop(fake_vllm):
    lm = make()
    texts = lm.chat(CHATS, GenParams(stop=("END",)))
    assert texts == ["ahpla", "ateb", "ammag", "atled"]
    prompts = FakeLLM.made[-1].calls[-1]["prompts"]
    assert ["".join(map(chr, p["prompt_token_ids"])) for p in prompts] == [
        f"<system>Be brief.<user>{q}<assistant>" for q in ("alpha", "beta", "gamma", "delta")]


def test_genparams_map_to_one_sampling_params_per_chat(fake_vllm):
    lm = make()
    lm.chat(CHATS, GenParams(max_new_tokens=33, temperature=0.7, top_p=0.9, seed=5, stop=("\n\n",)))
    sent = [sp.kwargs for sp in FakeLLM.made[-1].calls[-1]["params"]]
    assert len(sent) == len(CHATS)
    for kw in sent:
        assert {k: kw[k] for k in ("n", "temperature", "top_p", "max_tokens", "stop", "stop_token_ids")} \
            == dict(n=1, temperature=0.7, top_p=0.9, max_tokens=33, stop=["\n\n"], stop_token_ids=[0, 7])
    seeds = [kw["seed"] for kw in sent]
    assert len(set(seeds)) == len(CHATS)  # each chat its own seed...
    lm.chat(CHATS[::-1], GenParams(max_new_tokens=33, temperature=0.7, top_p=0.9, seed=5))
    again = [sp.kwargs["seed"] for sp in FakeLLM.made[-1].calls[-1]["params"]]
    assert again == seeds[::-1]  # ...that follows the chat, not its place in the batch
    lm.chat(CHATS, GenParams(temperature=0.7, seed=6))
    assert [sp.kwargs["seed"] for sp in FakeLLM.made[-1].calls[-1]["params"]] != seeds


def test_greedy_ignores_top_p_and_empty_stop_is_none(fake_vllm):
    make().chat(CHATS[:1], GenParams(temperature=0.0, top_p=0.5))
    kw = FakeLLM.made[-1].calls[-1]["params"][0].kwargs
    assert (kw["temperature"], kw["top_p"], kw["stop"]) == (0.0, 1.0, None)


def test_adapter_is_a_lora_request_on_every_call(fake_vllm, tmp_path):
    a = adapter_dir(tmp_path / "a", r=24)
    lm = make(adapter=str(a))
    init = FakeLLM.made[-1].init
    assert (init["enable_lora"], init["max_lora_rank"]) == (True, 32)  # 24 rounded up to a vLLM rank
    lm.chat(CHATS, GenParams())
    req = FakeLLM.made[-1].calls[-1]["lora"]
    assert (req.lora_int_id, req.lora_path) == (1, str(a.resolve()))
    assert req.lora_name == lm.name and lm.name.startswith("vllm:m:bfloat16+")
    b = adapter_dir(tmp_path / "b", weights=b"w2")
    lm.set_adapter(str(b))
    lm.chat(CHATS, GenParams())
    assert FakeLLM.made[-1].calls[-1]["lora"].lora_int_id == 2
    lm.set_adapter(str(a))  # the same weights again: the same id, so vLLM's loaded copy is reused
    lm.chat(CHATS, GenParams())
    assert FakeLLM.made[-1].calls[-1]["lora"].lora_int_id == 1
    lm.set_adapter(None)
    lm.chat(CHATS, GenParams())
    assert FakeLLM.made[-1].calls[-1]["lora"] is None and lm.name == "vllm:m:bfloat16"


def test_adapter_without_lora_engine_or_weights_is_refused(fake_vllm, tmp_path):
    lm = make()
    with pytest.raises(AdaptlabError, match="built without LoRA"):
        lm.set_adapter(str(adapter_dir(tmp_path / "a")))
    lm = make(vllm_args={"enable_lora": True})
    (tmp_path / "bad").mkdir()
    with pytest.raises(AdaptlabError, match="not an adapter directory"):
        lm.set_adapter(str(tmp_path / "bad"))


def test_vllm_args_belong_to_the_vllm_backend():
    with pytest.raises(ValueError, match="only backend=vllm"):
        BackendConfig(backend="local", vllm_args={"max_model_len": 10})


def test_missing_vllm_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(AdaptlabError, match=r"pip install 'adaptlab\[vllm\]'"):
        make_lm(BackendConfig(model="m", backend="vllm"))
