"""A fault-injecting OpenAI-compatible server for tests, on 127.0.0.1 (an ephemeral port).

It serves POST /v1/chat/completions and GET /v1/models. Answers are derived from the request only
(by default "echo: " + the last user message), so a test can check that every answer belongs to
its chat. Faults come from an explicit script (consumed in arrival order) or from a seeded schedule
decided per (item, attempt) — independent of thread interleaving, so the counts are reproducible —
and "down" mode fails every request. Requests are counted per item (the last user message by
default), faults by kind.

    with FaultServer(fault_rate=0.35, seed=1) as s:
        lm = OpenAILM("m", base_url=s.url, ...)
"""
from __future__ import annotations

import json
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

# 429 (with Retry-After), 500, 503, an answer slower than the client's timeout, a body cut short
# (but complete per Content-Length), a body that is not JSON, a connection closed with no response,
# and one closed in the middle of the body.
FAULTS = ("429", "500", "503", "slow", "truncated", "invalid_json", "drop", "drop_mid_body")


def completion(text: str, model: str = "m") -> bytes:
    return json.dumps({
        "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }).encode()


def error_body(message: str) -> bytes:
    return json.dumps({"error": {"message": message, "type": "test", "code": None}}).encode()


def last_user(body: dict) -> str:
    users = [m["content"] for m in body.get("messages", []) if m.get("role") == "user"]
    return users[-1] if users else ""


def echo(body: dict) -> str:
    return "echo: " + last_user(body)


@dataclass
class Reply:
    """A raw scripted reply."""

    status: int = 200
    body: bytes = b""
    headers: dict = field(default_factory=dict)
    content_type: str = "application/json"
    delay: float = 0.0


class FaultServer:
    """See the module docstring. Start with `with FaultServer(...) as s` or start()/stop()."""

    def __init__(self, fault_rate: float = 0.0, faults: tuple[str, ...] = FAULTS, seed: int = 0,
                 max_faults_per_item: int = 3, slow_s: float = 1.0, retry_after: str = "0",
                 answer: Callable[[dict], str] = echo, item_of: Callable[[dict], str] = last_user):
        unknown = set(faults) - set(FAULTS)
        assert not unknown, f"unknown faults {unknown}"
        self.fault_rate, self.fault_kinds, self.seed = fault_rate, tuple(faults), seed
        self.max_faults_per_item = max_faults_per_item
        """Scheduled faults stop after this many requests of an item: retries are bounded."""
        self.slow_s, self.retry_after = slow_s, retry_after
        self.answer, self.item_of = answer, item_of
        self.answer_delay = 0.0
        self.down = False
        """Every request fails with `down_status` (scripted replies still come first)."""
        self.down_status = 503
        self.down_after: int | None = None
        """Go down once this many distinct items have been answered."""
        self.echo_key = False
        """Error messages quote part of the API key received, as some real servers do."""
        self.lock = threading.Lock()
        self.requests: list[dict] = []
        self.per_item: Counter = Counter()   # requests per item
        self.answered: Counter = Counter()   # 200 answers per item
        self.faults: Counter = Counter()     # faults injected, by kind ("down" included)
        self.in_flight = self.max_in_flight = 0
        self._script: list = []
        self._stop = threading.Event()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)

    # -- control --

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def start(self) -> "FaultServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes slow replies
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)
        assert not self.thread.is_alive()

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def reply(self, status: int = 200, body: bytes = b"", headers: dict | None = None,
              content_type: str = "application/json", delay: float = 0.0) -> None:
        """Script a raw reply for the next unscripted request."""
        self._script.append(Reply(status, body, headers or {}, content_type, delay))

    def script(self, *kinds: str) -> None:
        """Script faults (names from FAULTS), one per request, in arrival order."""
        assert set(kinds) <= set(FAULTS), kinds
        self._script.extend(kinds)

    def stats(self) -> dict:
        return {"requests": len(self.requests), "items": len(self.per_item),
                "answered": sum(self.answered.values()), "faults": dict(sorted(self.faults.items())),
                "faulted_share": round(sum(self.faults.values()) / max(1, len(self.requests)), 3)}

    # -- decisions (under the lock) --

    def _decide(self, item: str, attempt: int):
        if self._script:
            return self._script.pop(0)
        if self.down:
            return "down"
        return self._scheduled(item, attempt)

    def _scheduled(self, item: str, attempt: int) -> str:
        rng = random.Random(f"{self.seed}:{item}:{attempt}")
        if attempt < self.max_faults_per_item and rng.random() < self.fault_rate:
            return rng.choice(self.fault_kinds)
        return "answer"

    def schedule(self, items) -> Counter:
        """The faults the seeded schedule gives these items if each is retried until answered."""
        out: Counter = Counter()
        for item in items:
            attempt = 0
            while (kind := self._scheduled(item, attempt)) != "answer":
                out[kind] += 1
                attempt += 1
        return out

    def _arrive(self, path: str, auth: str | None, body: dict):
        item = self.item_of(body)
        with self.lock:
            action = self._decide(item, self.per_item[item])
            self.per_item[item] += 1
            if action == "answer":
                self.answered[item] += 1
                if self.down_after is not None and len(self.answered) >= self.down_after:
                    self.down = True
            elif isinstance(action, str):
                self.faults[action] += 1
            self.requests.append({"path": path, "auth": auth, "body": body, "item": item,
                                  "outcome": action if isinstance(action, str) else action.status})
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        return action

    def _error_text(self, what: str, auth: str | None) -> str:
        if self.echo_key and auth:
            key = auth.removeprefix("Bearer ")
            return f"{what}; API key provided: {key[:12]}****{key[-4:]}"
        return what


def _handler(server: FaultServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.rstrip("/") != "/v1/models":
                return self._send(Reply(404, error_body("not found")))
            self._send(Reply(200, json.dumps({"object": "list", "data": [
                {"id": "test-model", "object": "model", "created": 0, "owned_by": "test"}]}).encode()))

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(Reply(404, error_body("not found")))
            body = json.loads(raw)
            auth = self.headers.get("Authorization")
            action = server._arrive(self.path, auth, body)
            try:
                self._act(action, body, auth)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout)
            finally:
                with server.lock:
                    server.in_flight -= 1

        def _act(self, action, body: dict, auth: str | None):
            if isinstance(action, Reply):
                if action.delay:
                    server._stop.wait(action.delay)
                return self._send(action)
            ok = completion(server.answer(body), body.get("model", "m"))
            err = lambda code, what: Reply(code, error_body(server._error_text(what, auth)))  # noqa: E731
            if action == "answer":
                if server.answer_delay:
                    server._stop.wait(server.answer_delay)
                self._send(Reply(200, ok))
            elif action == "429":
                self._send(Reply(429, error_body("rate limited"), {"Retry-After": server.retry_after}))
            elif action in ("500", "503"):
                self._send(err(int(action), "server error"))
            elif action == "down":
                self._send(err(server.down_status, "service unavailable"))
            elif action == "slow":
                server._stop.wait(server.slow_s)
                self._send(Reply(200, ok))
            elif action == "truncated":
                self._send(Reply(200, ok[: len(ok) // 2]))
            elif action == "invalid_json":
                self._send(Reply(200, b"this is { not json"))
            elif action == "drop":
                self.close_connection = True  # nothing written: the socket just closes
            elif action == "drop_mid_body":
                self._send(Reply(200, ok), cut=len(ok) // 2)
            else:
                raise AssertionError(action)

        def _send(self, r: Reply, cut: int | None = None):
            self.send_response(r.status)
            self.send_header("Content-Type", r.content_type)
            for k, v in r.headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(r.body)))
            self.end_headers()
            self.wfile.write(r.body if cut is None else r.body[:cut])
            if cut is not None:
                self.wfile.flush()
                self.close_connection = True

    return Handler
