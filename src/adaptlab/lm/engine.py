"""The local generation engine: shared-prefix KV reuse, continuous batching, its own decode loop.

    tokens, stats = generate(model, prompts, params, stops=[2], slots=32)

- The longest token prefix all prompts share (system prompt + demos) is run through the model
  once; every prompt then prefills only its own suffix on top of that prefix's KV cache.
- Decoding runs `slots` rows at a time. A row that emits a stop token, reaches `max_new_tokens`
  or (with `stop_check`) a stop string leaves the batch at once, and the next prompt takes its slot.
- The rows share one left-padded KV cache (transformers' DynamicCache): the 2D attention mask
  hides the padding, position ids are per row (RoPE is applied to keys before they are cached,
  so a row's cached keys do not depend on where in the cache they sit). Columns no live row
  uses any more are dropped.
- Prompts admitted together are prefilled in one forward (each suffix left-padded after the
  prefix: few large ops run far better than many small ones on a busy CPU). Sampling draws from
  a torch.Generator per prompt, seeded from (seed, index), so which prompts share a batch
  changes a sampled answer only through floating-point rounding.

Only models whose cache layers are all full attention (DynamicLayer) are supported
(`supports(model)`); others (sliding-window layers) keep `model.generate`.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

KV = list  # per layer: (keys, values), each [batch, kv_heads, length, head_dim]


@dataclass
class Stats:
    """What one `generate` call did (for benchmarks and logs)."""

    prefix_tokens: int = 0
    """Tokens of the shared prefix, computed once."""
    prefill_tokens: int = 0
    """Prompt tokens run through the model, the prefix counted once."""
    tokens: int = 0
    """New tokens, each row's stop token included."""
    steps: int = 0
    """Batched decode steps."""
    ttft_s: float | None = None
    """Seconds from the call to the first new token."""
    row_steps: int = 0
    """Sum over decode steps of the rows in the batch (computed positions)."""


@dataclass
class _Row:
    index: int
    pos: int  # position id of the next token fed
    tokens: list[int] = field(default_factory=list)
    gen: object = None  # torch.Generator when sampling


def shared_prefix(seqs: Sequence[Sequence[int]], keep: int = 1) -> int:
    """Length of the longest common prefix of `seqs`, capped so every sequence keeps at least
    `keep` tokens after it (0 for fewer than two sequences: nothing to share)."""
    if len(seqs) < 2:
        return 0
    first, n = seqs[0], min(map(len, seqs)) - keep
    for i in range(max(n, 0)):
        if any(s[i] != first[i] for s in seqs):
            return i
    return max(n, 0)


def supports(model) -> bool:
    """Whether every cache layer of `model` is a plain growing one (no sliding window)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


ROOM = 64
"""Spare positions a cache layer allocates when it runs out (see `_Layer`)."""


def _layer_class():
    from transformers.cache_utils import DynamicLayer

    class _Layer(DynamicLayer):
        """A DynamicLayer that appends into spare room (one copy per ROOM tokens) instead of
        concatenating the whole cache into new tensors at every step."""

        def update(self, key_states, value_states, *args, **kwargs):
            import torch

            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
                self.keys, self.values = key_states[..., :0, :], value_states[..., :0, :]
            n, used = key_states.shape[-2], self.keys.shape[-2]
            buf = getattr(self, "buf", None)
            if buf is None or used + n > buf[0].shape[-2] or buf[0].shape[0] != key_states.shape[0]:
                old = (self.keys, self.values)
                buf = []
                for t, new in zip(old, (key_states, value_states)):
                    shape = (new.shape[0], new.shape[1], used + n + ROOM, new.shape[3])
                    buf.append(torch.empty(shape, dtype=new.dtype, device=new.device))
                    buf[-1][..., :used, :] = t
                self.buf = buf
            buf[0][..., used : used + n, :] = key_states
            buf[1][..., used : used + n, :] = value_states
            self.keys, self.values = buf[0][..., : used + n, :], buf[1][..., : used + n, :]
            return self.keys, self.values

    return _Layer


def _cache(model, kv: KV | None):
    """A DynamicCache holding `kv` (not copied: the first update copies it into a new buffer)."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    layer = _layer_class()
    cache.layers = [layer() for _ in cache.layers]
    for lay, (k, v) in zip(cache.layers, kv or []):
        lay.lazy_initialization(k, v)
        lay.keys, lay.values = k, v
    return cache


def forward(model, ids, mask, positions, kv, keep=1):
    """(logits of the last `keep` positions (int) or of the positions in `keep` (1D tensor),
    the KV cache after `ids`). `kv`: a list of (keys, values), None, or a cache from `_cache`
    (which then grows in place)."""
    import torch

    cache = kv if hasattr(kv, "layers") else _cache(model, kv)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions,
                    past_key_values=cache, use_cache=True, logits_to_keep=keep)
    return out.logits, [(layer.keys, layer.values) for layer in cache.layers]


def prefix_kv(model, ids: list[int], device) -> KV | None:
    """The KV cache of `ids` at positions 0..len-1, batch 1 (None for an empty prefix)."""
    import torch

    if not ids:
        return None
    t = torch.tensor([ids], device=device)
    return forward(model, t, torch.ones_like(t), torch.arange(len(ids), device=device)[None], None)[1]


def expand(kv: KV | None, batch: int) -> KV | None:
    return None if kv is None else [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1))
                                     for k, v in kv]


def _pad_left(t, n: int, dim: int):
    import torch

    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    return torch.cat([t.new_zeros(shape), t], dim)


class _Batch:
    """The rows being decoded: one left-padded KV cache and attention mask for all of them."""

    def __init__(self):
        self.rows: list[_Row] = []
        self.kv: KV | None = None
        self.mask = None  # [rows, width], 1 where a row has a real token
        self.cache = None  # built from kv at the next step; grows in place until rows change

    def add(self, rows: list[_Row], kv: KV, mask) -> None:
        """Append `rows`, whose cache is `kv` with attention mask `mask` (batch dim first)."""
        import torch

        self.cache = None
        if not self.rows:
            self.rows, self.kv, self.mask = list(rows), kv, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        a, b = width - self.mask.shape[1], width - mask.shape[1]
        self.mask = torch.cat([_pad_left(self.mask, a, 1), _pad_left(mask, b, 1)])
        self.kv = [(torch.cat([_pad_left(k0, a, 2), _pad_left(k1, b, 2)]),
                    torch.cat([_pad_left(v0, a, 2), _pad_left(v1, b, 2)]))
                   for (k0, v0), (k1, v1) in zip(self.kv, kv)]
        self.rows += rows

    def keep(self, alive: list[int]) -> None:
        """Keep the rows at `alive`, then drop the leading columns none of them uses."""
        import torch

        if len(alive) == len(self.rows):
            return
        self.cache = None
        self.rows = [self.rows[i] for i in alive]
        if not alive:
            self.kv = self.mask = None
            return
        idx = torch.tensor(alive, device=self.mask.device)
        mask = self.mask.index_select(0, idx)
        start = int(mask.any(0).nonzero()[0])
        self.mask = mask[:, start:]
        self.kv = [(k.index_select(0, idx)[:, :, start:], v.index_select(0, idx)[:, :, start:])
                   for k, v in self.kv]

    def step(self, model):
        """Feed each row its last token; returns logits [rows, vocab]."""
        import torch

        dev = self.mask.device
        ids = torch.tensor([[r.tokens[-1]] for r in self.rows], device=dev)
        pos = torch.tensor([[r.pos] for r in self.rows], device=dev)
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.rows), 1)], 1)
        if self.cache is None:
            self.cache = _cache(model, self.kv)
        logits, self.kv = forward(model, ids, self.mask, pos, self.cache)
        for r in self.rows:
            r.pos += 1
        return logits[:, -1]


def pick(logits, rows: list[_Row], temperature: float, top_p: float) -> list[int]:
    """Greedy (temperature 0) or temperature + nucleus sampling, each row from its own generator."""
    import torch

    if temperature == 0:
        return logits.argmax(-1).tolist()
    probs = torch.softmax(logits.float() / temperature, -1)
    out = []
    for p, r in zip(probs, rows):
        if top_p < 1:
            sp, si = p.sort(descending=True)
            drop = sp.cumsum(0) - sp >= top_p  # the smallest set whose mass reaches top_p (as HF)
            p = torch.zeros_like(p).scatter_(0, si, sp.masked_fill(drop, 0))
        out.append(int(torch.multinomial(p, 1, generator=r.gen)))
    return out


def generate(model, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, stops: Sequence[int],
             slots: int, temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             order: Sequence[int] | None = None, device="cpu", pad_id: int = 0,
             stop_check: Callable[[list[int]], bool] | None = None,
             on_done: Callable[[int, list[int]], None] | None = None) -> tuple[list[list[int]], Stats]:
    """New token ids for each prompt (each ends with its stop token if it emitted one).

    Prompts are admitted in `order` (default: as given); `on_done(index, tokens)` is called as each
    row finishes. `stop_check(tokens)` ends a row early (e.g. a stop string was generated).
    """
    import torch

    t0, stats, stops = time.perf_counter(), Stats(), set(stops)
    P = shared_prefix(prompts)
    pre = prefix_kv(model, list(prompts[0][:P]), device)
    stats.prefix_tokens = stats.prefill_tokens = P
    out: list[list[int] | None] = [None] * len(prompts)
    queue, batch = deque(range(len(prompts)) if order is None else order), _Batch()

    def push(r: _Row, token: int) -> bool:
        """Append `token` to `r`; True when `r` is finished."""
        r.tokens.append(token)
        stats.tokens += 1
        if stats.ttft_s is None:
            stats.ttft_s = time.perf_counter() - t0
        if token in stops or len(r.tokens) >= max_new_tokens or (stop_check and stop_check(r.tokens)):
            out[r.index] = r.tokens
            if on_done:
                on_done(r.index, r.tokens)
            return True
        return False

    def prefill(idx: list[int]):
        """Prefill the suffixes of prompts `idx` together (left-padded between the prefix and
        each suffix); returns (logits [rows, vocab], kv, mask)."""
        suf = [list(prompts[i][P:]) for i in idx]
        n = max(map(len, suf))
        pads = [n - len(s) for s in suf]
        ids = torch.tensor([[pad_id] * p + s for p, s in zip(pads, suf)], device=device)
        mask = torch.tensor([[1] * P + [0] * p + [1] * (n - p) for p in pads], device=device)
        pos = (P + (torch.arange(n)[None] - torch.tensor(pads)[:, None]).clamp(min=0)).to(device)
        logits, kv = forward(model, ids, mask, pos, expand(pre, len(idx)))
        stats.prefill_tokens += sum(map(len, suf))
        return logits[:, -1], kv, mask

    while queue or batch.rows:
        free = slots - len(batch.rows)
        # Refill in groups (a quarter of the slots, or what is left): one prefill forward each.
        if queue and (free >= min(len(queue), max(1, slots // 4)) or not batch.rows):
            idx = [queue.popleft() for _ in range(min(free, len(queue)))]
            logits, kv, mask = prefill(idx)
            rows = [_Row(i, len(prompts[i]), gen=None if temperature == 0 else
                         torch.Generator(device=device).manual_seed(seed * 1_000_003 + i))
                    for i in idx]
            live = [j for j, (r, t) in enumerate(zip(rows, pick(logits, rows, temperature, top_p)))
                    if not push(r, t)]
            n_old = len(batch.rows)
            batch.add(rows, kv, mask)
            batch.keep(list(range(n_old)) + [n_old + j for j in live])
        if not batch.rows:
            continue
        logits = batch.step(model)
        stats.steps += 1
        stats.row_steps += len(batch.rows)
        tokens = pick(logits, batch.rows, temperature, top_p)
        batch.keep([j for j, (r, t) in enumerate(zip(batch.rows, tokens)) if not push(r, t)])
    return out, stats


# -- precision -----------------------------------------------------------------------------------
def native_bf16(device: str = "cpu") -> bool:
    """Whether `device` computes bf16 natively: CUDA capability >= 8 (Ampere on), or a CPU with
    AVX-512 BF16 or AMX (elsewhere torch emulates bf16 on the CPU, many times slower than fp32)."""
    if str(device).startswith("cuda"):
        import torch

        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


def resolve_precision(precision: str, device: str = "cpu", model=None) -> str:
    """'auto' -> 'bf16' where the hardware has native bf16, else 'fp32' (for a model already
    loaded, its weights' dtype); other values unchanged."""
    if precision != "auto":
        return precision
    if model is not None:
        import torch

        return "bf16" if next(model.parameters()).dtype == torch.bfloat16 else "fp32"
    return "bf16" if native_bf16(device) else "fp32"
