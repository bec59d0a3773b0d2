"""vLLM backend (optional, GPU): each call batched through vLLM's offline engine, `vllm.LLM`.

    pip install 'adaptlab[vllm]'   # an environment of its own: vllm 0.33 pins torch 2.14.0 and
                                   # transformers<5.21, the train extra torch 2.13.0 / 5.23.0

Prompts go through adaptlab's one chat-template path (`models.chat.render_ids` on the model's
tokenizer: the ids the local backend generates from) into `LLM.generate` as token prompts, and
generation stops at the same end-of-sequence / end-of-turn tokens. A LoRA adapter (a PEFT
directory, as `adaptlab tune` writes it) goes with every request as a `LoRARequest`; vLLM
applies it without merging, so `set_adapter` swaps adapters on one loaded base.

Each chat is sampled with its own seed, a function of `params.seed` and the chat alone, so its
answer does not depend on its batch or its place in it (sharded over Ray workers, resumed, or
not). GenParams has no `n`: one answer per chat.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from .. import progress
from ..errors import AdaptlabError, require
from .base import Chat, GenParams, adapter_name, cut_at_stop

# adaptlab precision -> vllm.LLM(dtype=...); auto is vLLM's own choice (FP16 for fp32 and fp16
# checkpoints, such as the converted packaged models; BF16 for bf16 ones)
DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp32": "float32"}


def request_seed(seed: int, chat: Chat) -> int:
    """The sampling seed of one chat: depends on the call's seed and the chat only."""
    digest = hashlib.sha256(json.dumps([seed, list(chat)], sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def sampling_params(vllm, params: GenParams, chats: Sequence[Chat],
                    stop_ids: Sequence[int]) -> list:
    """One `vllm.SamplingParams` per chat (temperature 0 is vLLM's greedy decoding)."""
    top_p = params.top_p if params.temperature > 0 else 1.0
    return [vllm.SamplingParams(n=1, temperature=params.temperature, top_p=top_p,
                                max_tokens=params.max_new_tokens, stop=list(params.stop) or None,
                                stop_token_ids=list(stop_ids), seed=request_seed(params.seed, c))
            for c in chats]


def lora_rank(adapter: str | Path) -> int:
    """The smallest `max_lora_rank` vLLM accepts that fits the adapter's rank `r`."""
    r = int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])
    return next((v for v in (8, 16, 32, 64, 128, 256, 320, 512) if v >= r), r)


class VllmLM:
    """A model on vLLM behind the LM and AdapterHost protocols.

    `name` is `vllm:<ref>:<dtype vLLM runs in>`, with an adapter `<that>+<hash of its weights>`.
    engine_args go to `vllm.LLM` (e.g. tensor_parallel_size, gpu_memory_utilization,
    max_model_len, enable_lora, max_lora_rank); an adapter given here turns LoRA on and sizes
    max_lora_rank to it. `llm` and `tokenizer` wrap ones already built (tests, notebooks).
    """

    def __init__(self, ref: str, precision: str = "auto", adapter: str | None = None,
                 llm=None, tokenizer=None, name: str | None = None, **engine_args):
        self._vllm = require("vllm", "vllm")
        if precision not in DTYPES:
            raise AdaptlabError(f"precision {precision!r}: the vllm backend takes "
                                f"{'/'.join(DTYPES)}; for quantized weights pass "
                                "vllm_args: {quantization: ...}")
        if adapter is not None:
            engine_args.setdefault("enable_lora", True)
            engine_args.setdefault("max_lora_rank", lora_rank(adapter))
        self.lora_enabled = llm is not None or bool(engine_args.get("enable_lora"))
        from ..models.chat import stop_token_ids
        from ..models.load import load_tokenizer

        self.llm = llm or self._engine(ref, precision, engine_args)
        self.tok = tokenizer or load_tokenizer(ref)
        self._stops = stop_token_ids(self.tok)
        dtype = str(self.llm.model_config.dtype).removeprefix("torch.")
        self.base_name = self.name = name or f"vllm:{ref}:{dtype}"
        self._lora = None
        self._lora_ids: dict[str, int] = {}
        if adapter is not None:
            self.set_adapter(adapter)

    def _engine(self, ref: str, precision: str, engine_args: dict):
        from ..models.registry import resolve

        return self._vllm.LLM(model=resolve(ref), dtype=DTYPES[precision], **engine_args)

    def __repr__(self) -> str:
        return f"VllmLM({self.name!r})"

    def chat(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        from ..models.chat import render_ids

        chats = list(chats)
        prompts = [{"prompt_token_ids": render_ids(self.tok, c, add_generation_prompt=True)}
                   for c in chats]
        outs = self.llm.generate(prompts, sampling_params(self._vllm, params, chats, self._stops),
                                 use_tqdm=progress.enabled(), lora_request=self._lora)
        if len(outs) != len(chats):
            raise RuntimeError(f"{self.name}: {len(outs)} outputs for {len(chats)} chats")
        # LLM.generate returns "in the same order as the input prompts" (its docstring)
        return [cut_at_stop(o.outputs[0].text, params.stop).strip() for o in outs]

    def set_adapter(self, path: str | None) -> None:
        """Answer with the LoRA adapter at `path` from now on (None: the bare base). Each
        adapter's weights get their own `lora_int_id`, so changed weights are loaded anew."""
        if path is None:
            self._lora, self.name = None, self.base_name
            return
        if not self.lora_enabled:
            raise AdaptlabError("vllm: this engine was built without LoRA; build it with "
                                "adapter=PATH or vllm_args: {enable_lora: true, max_lora_rank: R}")
        from ..models.load import check_adapter_dir

        p = check_adapter_dir(path).resolve()
        name = adapter_name(self.base_name, str(p))
        lora_id = self._lora_ids.setdefault(name, len(self._lora_ids) + 1)
        from vllm.lora.request import LoRARequest

        self._lora = LoRARequest(lora_name=name, lora_int_id=lora_id, lora_path=str(p))
        self.name = name

