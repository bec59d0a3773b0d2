"""One LM call sharded over a Ray cluster: `ray_workers` actors, each holding its own backend.

    make_lm(BackendConfig(model=..., ray_workers=4), cache=run_dir / "cache.sqlite")

The driver splits each `chat` call into contiguous shards of at most `batch_size` chats (and at
least one per worker when the call is small), hands them to whichever worker is free
(`ray.util.ActorPool`), and puts every answer back at its chat's index: the merged output is in
input order, with each chat answered exactly once. Every shard is answered with the call's own
GenParams, so a backend whose answer depends only on the chat and the parameters (fake, openai,
vllm; local and llamacpp at temperature 0, local up to batch-dependent rounding) gives what one
process gives. Only generation is sharded (the LM protocol): no scoring, no adapter swaps.

Workers are Ray actors made with `max_restarts=-1` (a dead worker is always started again, its
backend rebuilt) and `max_task_retries=ray_task_retries` (the shard it was answering is sent
again). Exceptions raised by the backend are not retried: they fail the call, as they would in
one process. The actors live as long as this object (or the Ray driver): the backend is built
once per worker, not once per call.

Why not Ray Data's `map_batches(<class>, compute=ActorPoolStrategy(size=N))`: it starts a new
actor pool for every dataset it executes, so each call would rebuild every worker's backend
(a model load) — and the teacher stage calls once per chunk of `batch_size` chats. Measured
with ray 2.60 on a 2-core machine: 5.5-8.3 s per 8-to-40-item call with a trivial class, new
worker processes each time. Ray Data's actor pools use the same two retry settings by default
(`ActorPoolMapOperator._apply_default_remote_args`).
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Sequence

from .. import progress
from ..errors import AdaptlabError, require
from .base import Chat, GenParams, OnResult

if TYPE_CHECKING:
    from .backends import Factory
    from .config import BackendConfig


def shards(n: int, size: int, workers: int) -> list[tuple[int, int]]:
    """range(n) as contiguous [start, stop) ranges of near-equal length (they differ by at most
    one), none longer than `size`, and at least `workers` of them when n allows, so a small
    call still keeps every worker busy. A pure function of its arguments."""
    if n <= 0:
        return []
    k = min(n, max(workers, -(-n // size)))
    q, r = divmod(n, k)
    bounds = [i * q + min(i, r) for i in range(k + 1)]
    return list(zip(bounds, bounds[1:]))


class _Worker:
    """The actor: one backend, built in the worker process."""

    def __init__(self, factory: Factory, cfg: BackendConfig, kwargs: dict):
        self.lm = factory(cfg, **kwargs)

    def describe(self) -> tuple[str, bool]:
        return self.lm.name, bool(getattr(self.lm, "answers_each", False))

    def chat(self, start: int, chats: list[Chat], params: GenParams) -> tuple[int, list[str]]:
        return start, list(self.lm.chat(chats, params))


def connect(address: str | None):
    """The `ray` module, joined to a cluster (the running one if this process already is)."""
    ray = require("ray", "scale")
    if not ray.is_initialized():
        ray.init(address=address)
    return ray


class RayLM:
    """The LM protocol over `cfg.ray_workers` Ray actors, each running `factory(cfg, **kwargs)`
    (cfg with ray_workers=0). `name` and `answers_each` are the backend's own, so the call cache
    keys and the teacher stage's journal behave as they do without Ray."""

    def __init__(self, factory: Factory, cfg: BackendConfig, kwargs: dict | None = None):
        self._ray = ray = connect(cfg.ray_address)
        inner = dataclasses.replace(cfg, ray_workers=0)
        actor = ray.remote(num_cpus=cfg.ray_cpus_per_worker, num_gpus=cfg.ray_gpus_per_worker,
                           max_restarts=-1, max_task_retries=cfg.ray_task_retries)(_Worker)
        self.actors = [actor.remote(factory, inner, dict(kwargs or {}))
                       for _ in range(cfg.ray_workers)]
        self.shard_size = cfg.batch_size
        try:
            self.name, self.answers_each = ray.get(self.actors[0].describe.remote())
        except ray.exceptions.RayActorError as e:  # the backend failed to build in the worker
            self.close()
            last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
            raise AdaptlabError(f"ray worker: backend {cfg.backend!r} failed to start: {last}") \
                from None

    def __repr__(self) -> str:
        return f"RayLM({self.name!r}, workers={len(self.actors)})"

    def chat(self, chats: Sequence[Chat], params: GenParams,
             on_result: OnResult | None = None) -> list[str]:
        """Answers in input order; `on_result(i, text)` for each as its shard comes back."""
        from ray.util import ActorPool

        chats = list(chats)
        out: list[str | None] = [None] * len(chats)
        parts = shards(len(chats), self.shard_size, len(self.actors))
        stops = dict(parts)

        def ask(actor, part: tuple[int, int]):
            return actor.chat.remote(part[0], chats[part[0]:part[1]], params)

        with progress.bar(total=len(chats), desc=f"ray x{len(self.actors)} {self.name}",
                          unit="chat") as pb:
            for start, texts in ActorPool(self.actors).map_unordered(ask, parts):
                stop = stops.pop(start, None)
                if stop is None:
                    raise RuntimeError(f"RayLM: the shard at {start} came back twice")
                self._place(out, start, stop, texts, on_result)
                pb.update(len(texts))
        if stops:  # ActorPool yields once per shard; a shard left over would be a lost answer
            raise RuntimeError(f"RayLM: shards {sorted(stops)} came back without answers")
        return out  # type: ignore[return-value]  # disjoint shards, each placed once

    def _place(self, out: list, start: int, stop: int, texts: list[str],
               on_result: OnResult | None) -> None:
        if len(texts) != stop - start:
            raise RuntimeError(f"{self.name} returned {len(texts)} texts for {stop - start} chats")
        out[start:stop] = texts
        for i, t in enumerate(texts, start):
            if on_result is not None:
                on_result(i, t)

    def close(self) -> None:
        """Stop the workers now (they also stop when the Ray driver exits)."""
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
