"""Local transformers backend: batched generation (left padding, KV cache, stop on EOS) and scoring."""
from __future__ import annotations

from typing import Sequence

from .. import progress
from ..models.chat import render_ids, stop_token_ids
from .base import Chat, GenParams, adapter_name, cut_at_stop


class LocalLM:
    """A transformers causal LM behind the LM, Scorer, ChoiceScorer and AdapterHost protocols.

    `name` names the base model (default `local:<ref>:<precision>`); with an adapter it becomes
    `<base>+<first 16 hex of the sha256 of adapter_model.safetensors>`.
    """

    def __init__(self, ref: str, precision: str = "fp32", adapter: str | None = None,
                 batch_size: int = 8, device: str = "cpu", model=None, tokenizer=None,
                 name: str | None = None, trust_remote_code: bool = False):
        from ..models.load import load_model

        if model is None:
            model, tokenizer = load_model(ref, precision, adapter=adapter, device=device,
                                          trust_remote_code=trust_remote_code)
        self.model, self.tok, self.device = model, tokenizer, device
        self.batch_size = batch_size
        self.base_name = name or f"local:{ref}:{precision}"
        self.name = adapter_name(self.base_name, adapter)
        self._stops = stop_token_ids(self.tok)

    # -- generation -------------------------------------------------------------------------
    def chat(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        prompts = [render_ids(self.tok, c, add_generation_prompt=True) for c in chats]
        # Longest first so each batch holds similar lengths (little padding); order restored after.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        with progress.bar(total=len(prompts), desc=f"generate {self.name}", unit="chat") as pb:
            for b, start in enumerate(range(0, len(order), self.batch_size)):
                idx = order[start : start + self.batch_size]
                texts = self._generate([prompts[i] for i in idx], params, seed=params.seed + b)
                for i, t in zip(idx, texts):
                    out[i] = cut_at_stop(t, params.stop).strip()
                pb.update(len(idx))
        return out

    def _left_pad(self, seqs: list[list[int]]):
        import torch

        width = max(map(len, seqs))
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
        return ids, mask

    def _generate(self, seqs: list[list[int]], params: GenParams, seed: int) -> list[str]:
        import torch

        ids, mask = self._left_pad(seqs)
        sample = params.temperature > 0
        kwargs = dict(do_sample=sample, max_new_tokens=params.max_new_tokens,
                      eos_token_id=self._stops, pad_token_id=self.tok.pad_token_id, use_cache=True)
        if sample:
            kwargs.update(temperature=params.temperature, top_p=params.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        with torch.no_grad():
            gen = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        return self.tok.batch_decode(gen[:, ids.shape[1]:], skip_special_tokens=True)

    # -- scoring ----------------------------------------------------------------------------
    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation as the assistant's reply to its chat."""
        import torch

        pairs = []
        for c, cont in zip(chats, continuations, strict=True):
            p = render_ids(self.tok, c, add_generation_prompt=True)
            pairs.append((p, self.tok(cont, add_special_tokens=False).input_ids))
        out = []
        for start in range(0, len(pairs), self.batch_size):
            out += self._score_batch(pairs[start : start + self.batch_size], torch)
        return out

    def _score_batch(self, pairs, torch) -> list[float]:
        seqs = [p + c for p, c in pairs]
        width = max(map(len, seqs))
        pad = self.tok.pad_token_id
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
        with torch.no_grad():
            logp = torch.log_softmax(self.model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        out = []
        for row, (p, c) in enumerate(pairs):
            pos = torch.arange(len(p) - 1, len(p) + len(c) - 1, device=self.device)
            out.append(float(logp[row, pos, torch.tensor(c, device=self.device)].sum()))
        return out

    # -- adapters ---------------------------------------------------------------------------
    def set_adapter(self, path: str | None) -> None:
        """Swap in the LoRA adapter at `path`, or go back to the bare base with None; `name`
        follows (the base name + the adapter weights' hash)."""
        from ..errors import require
        from ..models.load import attach_adapter

        if isinstance(self.model, require("peft", "train").PeftModel):
            self.model = self.model.unload()
        self.name = self.base_name
        if path is not None:
            self.model = attach_adapter(self.model, path).eval()
            self.name = adapter_name(self.base_name, path)

    # -- multiple choice ----------------------------------------------------------------------
    def choice_logprobs(self, chats: Sequence[Chat], options: Sequence[str]) -> list[list[float]]:
        """Log-probability of each option's first token as the reply to each chat: one forward
        pass per chat, for judges and multiple-choice probes (options must differ in first token)."""
        import torch

        first = [self.tok(o, add_special_tokens=False).input_ids[0] for o in options]
        if len(set(first)) != len(first):
            raise ValueError(f"options {list(options)} share a first token; use score() instead")
        prompts = [render_ids(self.tok, c, add_generation_prompt=True) for c in chats]
        out: list[list[float]] = [[] for _ in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        with progress.bar(total=len(prompts), desc=f"judge {self.name}", unit="text") as pb:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                ids, mask = self._left_pad([prompts[i] for i in idx])
                with torch.no_grad():
                    logits = self.model(input_ids=ids, attention_mask=mask).logits[:, -1].float()
                logp = torch.log_softmax(logits, -1)[:, first]
                for r, i in enumerate(idx):
                    out[i] = [float(v) for v in logp[r]]
                pb.update(len(idx))
        return out
