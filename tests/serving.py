"""Helpers for the serve tests: a server on a free loopback port, raw HTTP requests, fake
adapter directories."""
from __future__ import annotations

import contextlib
import http.client
import json
import threading
from pathlib import Path

from adaptlab.lm.base import GenParams
from adaptlab.lm.fake import FakeLM
from adaptlab.serve import make_server


def params_echo(chat, p: GenParams) -> str:
    return f"max={p.max_new_tokens} t={p.temperature} top_p={p.top_p} seed={p.seed} | {chat[-1]['content']}"


@contextlib.contextmanager
def served(lm=None, api_key=None, name="fake-model", **kw):
    server = make_server(lm or FakeLM(params_echo), name, "127.0.0.1", 0, api_key=api_key, **kw)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def request(server, method, path, body=None, headers=None, raw: bytes | None = None,
            text: bool = False):
    """(status, JSON body (or the text with text=True), headers) of one request."""
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=10)
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    h = {"Content-Type": "application/json", **(headers or {})}
    conn.request(method, path, body=data, headers=h)
    resp = conn.getresponse()
    out = resp.read().decode()
    conn.close()
    return resp.status, out if text else json.loads(out), dict(resp.getheaders())


def adapter_dir(root: Path, name: str) -> Path:
    """A directory that passes the adapter checks (FakeLM never reads the weights; their bytes
    differ per name, so the adapter's content hash does too)."""
    d = root / name
    d.mkdir()
    (d / "adapter_config.json").write_text("{}")
    (d / "adapter_model.safetensors").write_bytes(f"weights of {name}".encode())
    return d
