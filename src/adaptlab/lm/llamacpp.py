"""llama.cpp backend (optional): a GGUF model on llama.cpp's quantized CPU kernels.

For teachers and judges on machines without a GPU: the packaged GGUFs run as shipped (quantized),
without the fp32 conversion the transformers backend needs. Chats are answered one at a time,
each with its own seed (params.seed + its index), so a batch gives the same answers however it
is split. Outputs differ from the transformers backend's (quantized weights, other kernels).

    pip install 'adaptlab[llamacpp]'     # builds llama.cpp from source (several minutes)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .. import progress
from ..errors import AdaptlabError, require
from .base import Chat, GenParams, cut_at_stop


def gguf_file(ref: str) -> Path:
    """A packaged model's GGUF (split models are reassembled once, checked by size and sha256),
    or a path to a .gguf file."""
    from ..models.registry import PACKAGED, source_files

    if ref in PACKAGED:
        m = PACKAGED[ref]
        files = source_files(m)
        if not m.is_gguf:
            raise AdaptlabError(f"model '{ref}' ships as safetensors, not GGUF; use the local backend")
        if files is None:
            raise AdaptlabError(f"model '{ref}' is not installed; run: {m.install}")
        from ..models.convert import assemble

        return assemble(m, files)
    p = Path(ref)
    if p.suffix != ".gguf" or not p.is_file():
        raise AdaptlabError(f"{ref}: not a packaged GGUF model or a .gguf file")
    return p


class LlamaCppLM:
    """A GGUF model behind the LM protocol, through llama-cpp-python."""

    def __init__(self, ref: str, n_ctx: int = 4096, threads: int | None = None,
                 name: str | None = None):
        llama_cpp = require("llama_cpp", "llamacpp")
        self.path = gguf_file(ref)
        self.llm = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx,
                                   n_threads=threads or os.cpu_count(), verbose=False)
        self.name = name or f"llamacpp:{ref}"
        self.completion_tokens = 0  # running total, as llama.cpp counts them

    def __repr__(self) -> str:
        return f"LlamaCppLM({self.name!r}, path={str(self.path)!r})"

    def chat(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        out = []
        with progress.bar(total=len(chats), desc=f"generate {self.name}", unit="chat") as pb:
            for i, chat in enumerate(chats):
                r = self.llm.create_chat_completion(
                    messages=list(chat), max_tokens=params.max_new_tokens,
                    temperature=params.temperature, top_p=params.top_p if params.temperature else 1.0,
                    top_k=0 if params.temperature else 1, seed=params.seed + i,
                    stop=list(params.stop) or None)
                self.completion_tokens += r.get("usage", {}).get("completion_tokens", 0)
                out.append(cut_at_stop(r["choices"][0]["message"]["content"] or "", params.stop).strip())
                pb.update(1)
        return out
