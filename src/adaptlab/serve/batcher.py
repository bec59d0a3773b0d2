"""One worker thread over a queue: requests that arrive while a generation runs wait, and the
next generation takes every waiting item that can share it. A short gathering window lets
requests sent together by a client's threads (which never arrive at the same instant) share the
first generation too, instead of one running alone while the rest wait for it."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable

from .protocol import BadRequest

log = logging.getLogger(__name__)


@dataclass
class _Job:
    key: Hashable
    item: object
    future: Future = field(default_factory=Future)


class Batcher:
    """Calls `run(items) -> results` on its own thread, one call at a time. Each call takes the
    oldest waiting item and every other waiting item with the same key, in arrival order. A call
    that fails for several items is retried one item at a time, so one bad item fails alone.

    gather_s: once an item is waiting, wait up to this long for more before calling `run`,
    unless `gather_max()` items with its key are already waiting (0: call at once)."""

    def __init__(self, run: Callable[[list], list], max_waiting: int = 1024,
                 gather_s: float = 0.0, gather_max: Callable[[], int] = lambda: 1):
        self._run, self.max_waiting = run, max_waiting
        self.gather_s, self.gather_max = gather_s, gather_max
        self._jobs: deque[_Job] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self.calls = 0
        """How many `run` calls were made (the tests compare it with the requests sent)."""
        self._thread = threading.Thread(target=self._work, name="adaptlab-serve", daemon=True)
        self._thread.start()

    def submit(self, keyed: list[tuple[Hashable, object]]) -> list[Future]:
        """Queue (key, item) pairs together; a future per item holds its result or error."""
        jobs = [_Job(k, item) for k, item in keyed]
        with self._cv:
            if self._closed:
                raise BadRequest("the server is shutting down", 503, kind="server_error")
            if len(self._jobs) + len(jobs) > self.max_waiting:
                raise BadRequest(f"over {self.max_waiting} generations waiting; retry later",
                                 429, kind="rate_limit_error")
            self._jobs.extend(jobs)
            self._cv.notify()
        return [j.future for j in jobs]

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (after its current call) and fail what is still waiting."""
        with self._cv:
            self._closed = True
            left, self._jobs = list(self._jobs), deque()
            self._cv.notify()
        for j in left:
            j.future.set_exception(BadRequest("the server is shutting down", 503,
                                              kind="server_error"))
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _next(self) -> list[_Job] | None:
        with self._cv:
            while not self._jobs and not self._closed:
                self._cv.wait()
            if self.gather_s > 0:
                deadline, want = time.monotonic() + self.gather_s, self.gather_max()
                while not self._closed and (left := deadline - time.monotonic()) > 0:
                    key = self._jobs[0].key
                    if sum(j.key == key for j in self._jobs) >= want:
                        break
                    self._cv.wait(left)
            if self._closed:
                return None
            key = self._jobs[0].key
            batch = [j for j in self._jobs if j.key == key]
            self._jobs = deque(j for j in self._jobs if j.key != key)
            return batch

    def _work(self) -> None:
        while (batch := self._next()) is not None:
            try:
                self._settle(batch, self._call([j.item for j in batch]))
            except BaseException as e:
                if len(batch) == 1:
                    batch[0].future.set_exception(e)
                    continue
                log.warning("a batch of %d failed (%s); answering each alone", len(batch),
                            type(e).__name__)
                for j in batch:
                    try:
                        self._settle([j], self._call([j.item]))
                    except BaseException as e1:
                        j.future.set_exception(e1)

    def _call(self, items: list) -> list:
        self.calls += 1
        results = self._run(items)
        if len(results) != len(items):
            raise RuntimeError(f"{len(results)} results for {len(items)} items")
        return results

    @staticmethod
    def _settle(jobs: list[_Job], results: list) -> None:
        for j, r in zip(jobs, results):
            j.future.set_result(r)
