"""An OpenAI-compatible HTTP server over one local model.

`POST /v1/chat/completions` and `GET /v1/models`: enough for adaptlab's own OpenAI backend, the
`openai` package, DSPy and curl. Standard library only (`http.server`); one generation at a time.
Defaults follow the OpenAI API where it has one (temperature 1, top_p 1); max_tokens is 256 when
not given and seed 0, so the same request gets the same answer.

Safe by default:
- binds to 127.0.0.1; binding to any other address without an API key is refused;
- with a key, every request must carry `Authorization: Bearer <key>` (compared in constant
  time); the key is read from an environment variable and never printed or logged;
- without a key, the `Host` header must name a loopback address (a web page cannot reach the
  server through DNS rebinding) and POST bodies must be `application/json` (a web page cannot
  send one without the browser asking the server first, and the server never says yes);
- a bad request gets a 4xx with an OpenAI-style error body; a failure inside the model gets a
  500 with the exception's type only; no traceback is ever sent.
"""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from .errors import AdaptlabError
from .lm.base import GenParams, cut_at_stop

log = logging.getLogger(__name__)

DEFAULT_KEY_ENV = "ADAPTLAB_API_KEY"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 4096
MAX_BODY_BYTES = 4 << 20
MAX_STOP = 4
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs")


# -- binding and keys -----------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses; a host name other than localhost is not
    trusted to be loopback (it may resolve anywhere)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key_from_env(env: str | None) -> str | None:
    """The key clients must send: from `env` (which must then be set), else from
    $ADAPTLAB_API_KEY if set, else None (no key: loopback only)."""
    if env is None:
        return os.environ.get(DEFAULT_KEY_ENV) or None
    key = os.environ.get(env)
    if not key:
        raise AdaptlabError(f"${env} is not set (it should hold the API key clients must send)")
    return key


def check_bind(host: str, api_key: str | None) -> None:
    if not api_key and not is_loopback(host):
        raise AdaptlabError(
            f"refusing to serve on {host or 'all interfaces'} without an API key: set "
            f"${DEFAULT_KEY_ENV} (or name another variable with --api-key-env), or bind to "
            f"{DEFAULT_HOST}")


# -- request parsing ------------------------------------------------------------------------

class BadRequest(Exception):
    """A client error: answered with this status and message, never a traceback."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.param, self.kind = status, param, kind


def _number(body: dict, name: str, default, kind=float, lo=None, hi=None):
    value = body.get(name)
    if value is None:
        return default
    ok_types = (int,) if kind is int else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types) or value != value:
        raise BadRequest(f"{name}: expected {'an integer' if kind is int else 'a number'}, "
                         f"got {json.dumps(value)[:40]}", param=name)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise BadRequest(f"{name}: must be between {lo} and {hi}, got {value}", param=name)
    return kind(value)


def _content(i: int, content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "".join(p["text"] for p in content)
    raise BadRequest(f"messages[{i}].content: expected a string or a list of text parts",
                     param=f"messages[{i}].content")


def parse_messages(messages) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: expected a non-empty list of {role, content}", param="messages")
    chat = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"messages[{i}]: expected an object", param=f"messages[{i}]")
        role = ROLES.get(m.get("role"))
        if role is None:
            raise BadRequest(f"messages[{i}].role: expected one of system/user/assistant, "
                             f"got {json.dumps(m.get('role'))[:40]}", param=f"messages[{i}].role")
        chat.append({"role": role, "content": _content(i, m.get("content"))})
    return chat


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stop = [stop] if isinstance(stop, str) else stop
    if (not isinstance(stop, list) or len(stop) > MAX_STOP
            or not all(isinstance(s, str) and s for s in stop)):
        raise BadRequest(f"stop: expected a string or a list of up to {MAX_STOP} non-empty strings",
                         param="stop")
    return tuple(stop)


def parse_request(body, max_tokens_limit: int = MAX_TOKENS_LIMIT) -> tuple[list[dict], GenParams]:
    """A chat-completions request body -> (chat, GenParams); BadRequest says what is wrong."""
    if not isinstance(body, dict):
        raise BadRequest("request body: expected a JSON object")
    if body.get("stream"):
        raise BadRequest("stream: streaming is not supported; send stream=false", param="stream")
    for name in UNSUPPORTED:
        if body.get(name):
            raise BadRequest(f"{name}: not supported by this server", param=name)
    if body.get("n") not in (None, 1):
        raise BadRequest("n: only n=1 is supported", param="n")
    chat = parse_messages(body.get("messages"))
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, name, min(DEFAULT_MAX_TOKENS, max_tokens_limit), int, 1,
                         max_tokens_limit)
    top_p = _number(body, "top_p", 1.0, float, 0, 1)
    if top_p <= 0:
        raise BadRequest("top_p: must be greater than 0", param="top_p")
    return chat, GenParams(max_new_tokens=max_tokens,
                           temperature=_number(body, "temperature", 1.0, float, 0, 2),
                           top_p=top_p, seed=_number(body, "seed", 0, int, -(2**63), 2**63 - 1),
                           stop=_stop(body))


# -- the server -----------------------------------------------------------------------------

def _count_tokens(lm, chat: list[dict], text: str) -> tuple[int, int]:
    """(prompt, completion) token counts with the model's tokenizer; word counts without one."""
    tok = getattr(lm, "tok", None)
    if tok is None:
        return sum(len(m["content"].split()) for m in chat), len(text.split())
    from .models.chat import render_ids

    return (len(render_ids(tok, chat, add_generation_prompt=True)),
            len(tok(text, add_special_tokens=False).input_ids))


class OpenAIServer(ThreadingHTTPServer):
    """Holds the one model, its lock and the key; `lm` may be set after binding."""

    daemon_threads = True

    def __init__(self, lm, model_name: str, host: str, port: int, api_key: str | None,
                 max_tokens_limit: int):
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        self.lm, self.model_name, self.max_tokens_limit = lm, model_name, max_tokens_limit
        self._api_key = api_key.encode() if api_key else None
        self.lock = threading.Lock()
        self.created = int(time.time())
        super().__init__((host.strip("[]"), port), _Handler)

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIServer(model={self.model_name!r}, url={self.url!r}, key={self.needs_key})"

    @property
    def needs_key(self) -> bool:
        return self._api_key is not None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/v1"

    def key_ok(self, header: str | None) -> bool:
        scheme, _, given = (header or "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                                  self._api_key)

    def complete(self, body) -> dict:
        chat, params = parse_request(body, self.max_tokens_limit)
        with self.lock:  # one model: generations run one at a time
            text = cut_at_stop(self.lm.chat([chat], params)[0], params.stop)
            prompt_tokens, completion_tokens = _count_tokens(self.lm, chat, text)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if completion_tokens >= params.max_new_tokens else "stop",
                "logprobs": None,
            }],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }

    def models(self) -> dict:
        return {"object": "list", "data": [{"id": self.model_name, "object": "model",
                                            "created": self.created, "owned_by": "adaptlab"}]}


def _host_name(host: str) -> str:
    """The name in a Host header, without the port ("[::1]:8000" -> "::1")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class _Handler(BaseHTTPRequestHandler):
    server: OpenAIServer
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle or stalled connection frees its thread

    def version_string(self) -> str:
        return "adaptlab"

    def log_message(self, fmt, *args) -> None:  # the request line only: never headers
        log.info("%s %s", self.address_string(), fmt % args)

    def send_error(self, code, message=None, explain=None) -> None:
        """http.server's own errors (malformed request line, unknown method...) as JSON too."""
        self._error(code, message or HTTPStatus(code).phrase, "invalid_request_error")

    def do_GET(self) -> None:
        self._respond(lambda: self.server.models() if self.path.rstrip("/") == "/v1/models"
                      else self._not_found())

    def do_POST(self) -> None:
        def answer():
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._not_found()
            return self.server.complete(self._json_body())
        self._respond(answer)

    # -- plumbing --

    def _not_found(self):
        raise BadRequest(f"no such endpoint: {self.command} {self.path[:100]}", 404,
                         kind="not_found_error")

    def _respond(self, answer) -> None:
        try:
            self._guard()
            self._send(200, answer())
        except BadRequest as e:
            self._error(e.status, str(e), e.kind, e.param)
        except Exception as e:  # a bug or a model failure: the client learns the type only
            log.exception("request failed")
            self._error(500, f"the server failed to answer ({type(e).__name__})", "server_error")

    def _guard(self) -> None:
        if self.server.needs_key:
            if not self.server.key_ok(self.headers.get("Authorization")):
                raise BadRequest("missing or invalid API key: send Authorization: Bearer <key>",
                                 401, kind="authentication_error")
            return
        if not is_loopback(_host_name(self.headers.get("Host") or "")):
            raise BadRequest("without an API key this server answers only requests addressed to "
                             "localhost", 403, kind="permission_error")

    def _json_body(self):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise BadRequest("Content-Type must be application/json", 415)
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise BadRequest("a Content-Length header is required", 411)
        if int(length) > MAX_BODY_BYTES:
            raise BadRequest(f"request body over {MAX_BODY_BYTES} bytes", 413)
        raw = self.rfile.read(int(length))
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise BadRequest(f"request body is not valid JSON: {str(e)[:100]}") from None

    def _error(self, status: int, message: str, kind: str, param: str | None = None) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        self._send(status, body, {"Connection": "close", **extra})

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def make_server(lm, model_name: str, host: str = DEFAULT_HOST, port: int = 8000,
                api_key: str | None = None, max_tokens_limit: int = MAX_TOKENS_LIMIT) -> OpenAIServer:
    """Bind (port 0: any free port) and return the server; `serve_forever()` starts answering.
    `lm` is any LM (LocalLM, FakeLM...) and may be set on the server after binding."""
    check_bind(host, api_key)
    try:
        return OpenAIServer(lm, model_name, host, port, api_key, max_tokens_limit)
    except OSError as e:
        raise AdaptlabError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def run(server: OpenAIServer) -> None:
    """Answer requests until interrupted (Ctrl-C), then close the socket."""
    from . import progress

    auth = "API key required" if server.needs_key else "no API key: local requests only"
    progress.log(f"serving {server.model_name} at {server.url} ({auth}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        progress.log("stopped")
    finally:
        server.server_close()
