"""Local transformers backend: generation (shared-prefix KV cache, continuous batching, stop on
EOS per row; `lm.engine`) and scoring (the shared prefix computed once)."""
from __future__ import annotations

from typing import Sequence

from .. import progress
from ..models.chat import render_ids, stop_token_ids
from . import engine as eng
from .base import Chat, GenParams, adapter_name, cut_at_stop

ENGINES = ("continuous", "generate")


class LocalLM:
    """A transformers causal LM behind the LM, Scorer, ChoiceScorer and AdapterHost protocols.

    `name` names the base model (default `local:<ref>:<precision>`, the precision resolved); with an
    adapter it becomes `<base>+<first 16 hex of the sha256 of adapter_model.safetensors>`.

    precision: fp32 | bf16 | int8 | int8-dynamic | auto (bf16 where the hardware has native bf16,
    else fp32). int8-dynamic (CPU, inference only: `models.load.quantize_dynamic`) is the fast
    choice for a teacher on a CPU without native bf16; an adapter given here is merged into the
    weights before they are quantized, and `set_adapter` is refused.
    engine: `continuous` (lm.engine: the prompts' shared prefix computed once, `batch_size` decode
    slots refilled as rows finish) or `generate` (the earlier path: batches of `batch_size`
    through `model.generate`, each waiting for its longest row). Models with sliding-window
    attention always use `generate`.
    """

    def __init__(self, ref: str, precision: str = "fp32", adapter: str | None = None,
                 batch_size: int = 8, device: str = "cpu", model=None, tokenizer=None,
                 name: str | None = None, trust_remote_code: bool = False,
                 engine: str = "continuous"):
        from ..models.load import load_model

        if engine not in ENGINES:
            raise ValueError(f"engine '{engine}': expected one of {', '.join(ENGINES)}")
        precision = eng.resolve_precision(precision, device, model)
        if model is None:
            dynamic = precision == "int8-dynamic"
            model, tokenizer = load_model(ref, "fp32" if dynamic else precision, adapter=adapter,
                                          device=device, trust_remote_code=trust_remote_code)
            if dynamic:
                from ..models.load import quantize_dynamic

                if adapter is not None:
                    model = model.merge_and_unload()
                model = quantize_dynamic(model, device)
        self.model, self.tok, self.device = model, tokenizer, device
        self.batch_size, self.precision, self.engine = batch_size, precision, engine
        self.base_name = name or f"local:{ref}:{precision}"
        self.name = adapter_name(self.base_name, adapter)
        self._stops = stop_token_ids(self.tok)
        self.last_stats: eng.Stats | None = None
        """What the last `chat` on the continuous engine did (prefix length, tokens, TTFT)."""

    def _engine_ok(self) -> bool:
        return eng.supports(self.model)

    # -- generation -------------------------------------------------------------------------
    def chat(self, chats: Sequence[Chat], params: GenParams) -> list[str]:
        prompts = [render_ids(self.tok, c, add_generation_prompt=True) for c in chats]
        # Longest first: the cache is as wide as the longest live row, so later rows fit inside it.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        with progress.bar(total=len(prompts), desc=f"generate {self.name}", unit="chat") as pb:
            if self.engine == "continuous" and self._engine_ok():
                texts = self._chat_continuous(prompts, order, params, pb)
            else:
                texts = self._chat_generate(prompts, order, params, pb)
        return [cut_at_stop(t, params.stop).strip() for t in texts]

    def _chat_continuous(self, prompts, order, params: GenParams, pb) -> list[str]:
        stop_check = None
        if params.stop:
            tail = max(map(len, params.stop)) + 4  # tokens: a stop string ending at the newest one

            def stop_check(toks: list[int]) -> bool:
                text = self.tok.decode(toks[-tail:], skip_special_tokens=True)
                return any(s in text for s in params.stop)

        toks, self.last_stats = eng.generate(
            self.model, prompts, max_new_tokens=params.max_new_tokens, stops=self._stops,
            slots=self.batch_size, temperature=params.temperature, top_p=params.top_p,
            seed=params.seed, order=order, device=self.device, pad_id=self.tok.pad_token_id,
            stop_check=stop_check,
            on_done=lambda i, t: pb.update(1))
        return self.tok.batch_decode(toks, skip_special_tokens=True)

    def _chat_generate(self, prompts, order, params: GenParams, pb) -> list[str]:
        out: list[str] = [""] * len(prompts)
        for b, start in enumerate(range(0, len(order), self.batch_size)):
            idx = order[start : start + self.batch_size]
            texts = self._generate([prompts[i] for i in idx], params, seed=params.seed + b)
            for i, t in zip(idx, texts):
                out[i] = t
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

    # -- scoring (the prompts' shared prefix computed once) -----------------------------------
    def _prefix(self, prompts: list[list[int]]):
        """(length, KV) of the prefix all `prompts` share, each keeping >= 1 token of its own."""
        n = eng.shared_prefix(prompts) if self._engine_ok() else 0
        return n, eng.prefix_kv(self.model, prompts[0][:n], self.device) if n else None

    def _suffix_logits(self, seqs: list[list[int]], P: int, pre, start: int):
        """Logits at positions start.. (suffix coordinates) of each right-padded suffix in
        `seqs`, after the shared prefix (length P, KV `pre`)."""
        import torch

        width, pad, dev = max(map(len, seqs)), self.tok.pad_token_id, self.device
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=dev)
        mask = torch.tensor([[1] * (P + len(s)) + [0] * (width - len(s)) for s in seqs], device=dev)
        pos = torch.arange(P, P + width, device=dev)[None].expand(len(seqs), -1)
        keep = torch.arange(start, width, device=dev)
        return eng.forward(self.model, ids, mask, pos, eng.expand(pre, len(seqs)), keep)[0]

    def score(self, chats: Sequence[Chat], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation as the assistant's reply to its chat."""
        pairs = []
        for c, cont in zip(chats, continuations, strict=True):
            p = render_ids(self.tok, c, add_generation_prompt=True)
            pairs.append((p, self.tok(cont, add_special_tokens=False).input_ids))
        if not pairs:
            return []
        prompts = list(dict.fromkeys(tuple(p) for p, _ in pairs))
        if len(prompts) < len(pairs) and self._engine_ok():  # e.g. a question and its options
            return self._score_grouped(pairs, [list(p) for p in prompts])
        P, pre = self._prefix([p for p, _ in pairs])
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        out = [0.0] * len(pairs)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            for i, v in zip(idx, self._score_batch([pairs[i] for i in idx], P, pre)):
                out[i] = v
        return out

    def _score_grouped(self, pairs, prompts: list[list[int]]) -> list[float]:
        """`score` when prompts repeat (one question, several candidate answers): each distinct
        prompt is computed once (after the prefix all of them share), then all its
        continuations are scored from its cache together, so four options cost about one prompt
        instead of four."""
        import torch

        where = {tuple(p): i for i, p in enumerate(prompts)}
        groups: list[list[tuple[int, list[int]]]] = [[] for _ in prompts]
        for j, (p, c) in enumerate(pairs):
            groups[where[tuple(p)]].append((j, c))
        P, pre = self._prefix(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        per = max(1, self.batch_size // max(len(g) for g in groups))  # rows of continuations ~ batch_size
        out = [0.0] * len(pairs)
        for start in range(0, len(order), per):
            idx = order[start:start + per]
            for j, v in self._grouped_batch([prompts[i][P:] for i in idx], [groups[i] for i in idx], P, pre):
                out[j] = v
        return out

    def _grouped_batch(self, suf: list[list[int]], groups, P: int, pre):
        """(pair index, log-probability) for each continuation of these prompt suffixes: one
        pass over the right-padded suffixes, then one over every continuation, each from a copy
        of its prompt's cache (the padding between them masked out)."""
        import torch

        dev, pad, w = self.device, self.tok.pad_token_id, max(map(len, suf))
        ids = torch.tensor([s + [pad] * (w - len(s)) for s in suf], device=dev)
        mask = [[1] * (P + len(s)) + [0] * (w - len(s)) for s in suf]
        pos = torch.arange(P, P + w, device=dev)[None].expand(len(suf), -1)
        first = min(map(len, suf)) - 1
        logits, kv = eng.forward(self.model, ids, torch.tensor(mask, device=dev), pos,
                                 eng.expand(pre, len(suf)), torch.arange(first, w, device=dev))
        rows = [(r, j, c) for r, g in enumerate(groups) for j, c in g if c]
        yield from ((j, 0.0) for g in groups for j, c in g if not c)  # nothing to score
        if not rows:
            return
        rep = torch.tensor([r for r, _, _ in rows], device=dev)
        kv = [(k.index_select(0, rep), v.index_select(0, rep)) for k, v in kv]
        w2 = max(len(c) for _, _, c in rows)
        ids2 = torch.tensor([c + [pad] * (w2 - len(c)) for _, _, c in rows], device=dev)
        mask2 = torch.tensor([mask[r] + [1] * len(c) + [0] * (w2 - len(c)) for r, _, c in rows], device=dev)
        pos2 = torch.tensor([[P + len(suf[r]) + t for t in range(w2)] for r, _, _ in rows], device=dev)
        logits2 = eng.forward(self.model, ids2, mask2, pos2, kv, torch.arange(0, w2, device=dev))[0]
        for n, (r, j, c) in enumerate(rows):
            lp = float(torch.log_softmax(logits[r, len(suf[r]) - 1 - first].float(), -1)[c[0]])
            if len(c) > 1:
                rest = torch.log_softmax(logits2[n, :len(c) - 1].float(), -1)
                lp += float(rest[torch.arange(len(c) - 1), torch.tensor(c[1:], dtype=torch.long)].sum())
            yield j, lp

    def _score_batch(self, pairs, P: int, pre) -> list[float]:
        import torch

        first = min(len(p) for p, _ in pairs) - 1 - P  # earliest position whose logits are used
        logits = self._suffix_logits([p[P:] + c for p, c in pairs], P, pre, first)
        out = []
        for row, (p, c) in enumerate(pairs):
            a = len(p) - 1 - P - first
            logp = torch.log_softmax(logits[row, a : a + len(c)].float(), -1)
            out.append(float(logp[torch.arange(len(c)), torch.tensor(c, dtype=torch.long)].sum()))
        return out

    # -- adapters ---------------------------------------------------------------------------
    def set_adapter(self, path: str | None) -> None:
        """Swap in the LoRA adapter at `path`, or go back to the bare base with None; `name`
        follows (the base name + the adapter weights' hash)."""
        from ..errors import AdaptlabError, require
        from ..models.load import attach_adapter

        if self.precision == "int8-dynamic":
            if path is None and self.name == self.base_name:
                return  # already the bare base: nothing to swap
            raise AdaptlabError("precision int8-dynamic: adapters cannot be swapped on quantized "
                                "weights; build the LM with adapter=PATH (merged before quantizing)")

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

        first_ids = [self.tok(o, add_special_tokens=False).input_ids[0] for o in options]
        if len(set(first_ids)) != len(first_ids):
            raise ValueError(f"options {list(options)} share a first token; use score() instead")
        prompts = [render_ids(self.tok, c, add_generation_prompt=True) for c in chats]
        out: list[list[float]] = [[] for _ in prompts]
        if not prompts:
            return out
        P, pre = self._prefix(prompts)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        with progress.bar(total=len(prompts), desc=f"judge {self.name}", unit="text") as pb:
            for start in range(0, len(order), self.batch_size):
                idx = order[start : start + self.batch_size]
                first = min(len(prompts[i]) for i in idx) - 1 - P
                logits = self._suffix_logits([prompts[i][P:] for i in idx], P, pre, first)
                for r, i in enumerate(idx):
                    last = logits[r, len(prompts[i]) - 1 - P - first].float()
                    out[i] = [float(v) for v in torch.log_softmax(last, -1)[first_ids]]
                pb.update(len(idx))
        return out
