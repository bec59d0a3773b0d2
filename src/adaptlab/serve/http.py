"""The HTTP side: routes, the guard every request passes, JSON and server-sent-event replies."""
from __future__ import annotations

import json
import logging
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import unquote

from .guard import host_name, is_loopback
from .protocol import BadRequest, parse_adapter

if TYPE_CHECKING:
    from .server import OpenAIServer

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 4 << 20
ROUTES = [  # (method, path pattern, handler method); a captured group is its argument
    ("GET", re.compile(r"/v1/models"), "_list_models"),
    ("GET", re.compile(r"/v1/models/(.+)"), "_get_model"),
    ("POST", re.compile(r"/v1/chat/completions"), "_chat"),
    ("POST", re.compile(r"/v1/adapters"), "_add_adapter"),
    ("DELETE", re.compile(r"/v1/adapters/(.+)"), "_remove_adapter"),
]


class Handler(BaseHTTPRequestHandler):
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
        self._respond()

    def do_POST(self) -> None:
        self._respond()

    def do_DELETE(self) -> None:
        self._respond()

    # -- endpoints --

    def _list_models(self):
        return self.server.models()

    def _get_model(self, name: str):
        return self.server.model(name)

    def _chat(self):
        return self.server.complete(self._json_body())

    def _add_adapter(self):
        return self.server.add_adapter(*parse_adapter(self._json_body()))

    def _remove_adapter(self, name: str):
        if self.headers.get("Content-Length", "0") != "0":
            self.close_connection = True  # a body is not read: it must not be taken for a request
        return self.server.remove_adapter(name)

    # -- plumbing --

    def _route(self):
        path = self.path.split("?", 1)[0].rstrip("/")
        allowed = []
        for method, pattern, name in ROUTES:
            m = pattern.fullmatch(path)
            if m and method == self.command:
                return getattr(self, name)(*(unquote(g) for g in m.groups()))
            if m:
                allowed.append(method)
        if allowed:
            raise BadRequest(f"{self.command} is not allowed on {path[:100]} (use "
                             f"{'/'.join(allowed)})", 405)
        raise BadRequest(f"no such endpoint: {self.command} {self.path[:100]}", 404,
                         kind="not_found_error")

    def _respond(self) -> None:
        try:
            self._guard()
            body = self._route()
            if isinstance(body, list):
                self._send_events(body)
            else:
                self._send(200, body)
        except BadRequest as e:
            self._error(e.status, str(e), e.kind, e.param, e.code)
        except Exception as e:  # a bug or a model failure: the client learns the type only
            log.exception("request failed")
            self._error(500, f"the server failed to answer ({type(e).__name__})", "server_error")

    def _guard(self) -> None:
        if self.server.needs_key:
            if not self.server.key_ok(self.headers.get("Authorization")):
                raise BadRequest("missing or invalid API key: send Authorization: Bearer <key>",
                                 401, kind="authentication_error")
            return
        if not is_loopback(host_name(self.headers.get("Host") or "")):
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

    def _error(self, status: int, message: str, kind: str, param: str | None = None,
               code: str | None = None) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
        extra = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
        self._send(status, body, {"Connection": "close", **extra})

    def _send(self, status: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self._write(status, data, {"Content-Type": "application/json",
                                   "Content-Length": str(len(data)), **(headers or {})})

    def _send_events(self, chunks: list[dict]) -> None:
        """A stream: `data: <chunk>` events, then `data: [DONE]`; the connection closes after
        it (no Content-Length: the end of the stream is the end of the body)."""
        self.close_connection = True
        events = [f"data: {json.dumps(c)}\n\n" for c in chunks] + ["data: [DONE]\n\n"]
        self._write(200, "".join(events).encode(), {
            "Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache",
            "Connection": "close"})

    def _write(self, status: int, data: bytes, headers: dict) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
