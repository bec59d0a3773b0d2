"""An OpenAI-compatible HTTP server over one local model and LoRA adapters served on it by name.

Enough for adaptlab's own OpenAI backend, the `openai` package, DSPy and curl. Standard library
only (`http.server`); the model is imported only by `serve_model`.

- `POST /v1/chat/completions`: `messages`, `model` (the base's name or an adapter's; absent: the
  base; any other: 404 `model_not_found`), `max_completion_tokens` or `max_tokens` (256 when
  neither is given), `temperature` (default 1), `top_p` (default 1), `seed` (default 0, so the
  same request gets the same answer), `stop`, `n` (up to 16: at temperature 0 the n choices are
  one greedy answer repeated; above it, n samples, choice i seeded from (seed, i)), `stream` and
  `stream_options.include_usage`. Other fields are ignored (clients send many), except those
  that would change what an answer is (tools, logprobs), which get a 400.
  Streaming (server-sent events: `data: {chat.completion.chunk}` ..., `data: [DONE]`) is not
  incremental: the whole answer is generated first, then sent as a role chunk, word-sized
  content chunks and a finish chunk per choice.
- `GET /v1/models` (and `/v1/models/<name>`): the base and every adapter served.
- `POST /v1/adapters` `{"name": ..., "path": ...}`: serve base + the adapter in that directory
  (adapter_config.json + adapter_model.safetensors; never a pickle) as `name`; the adapter is
  loaded at once, so one that does not fit the base is refused (400). `DELETE
  /v1/adapters/<name>`: stop serving it. The same from Python: `server.add_adapter(name, path)`,
  `server.remove_adapter(name)`. One adapter is in the model at a time (LocalLM.set_adapter),
  swapped under `server.lock` when the next generation needs another.
- One worker thread runs every generation. Requests that arrive while it generates wait in a
  queue; the next generation takes the oldest waiting one and every other waiting generation
  with the same model and parameters (greedy decoding: seed and top_p aside) in one `lm.chat`
  call, which LocalLM batches. A sampled answer is reproducible from its seed when it is
  generated alone; batched, its place in the batch seeds its sampler too. Over 1024 waiting
  generations: 429.

Safe by default:
- binds to 127.0.0.1; binding to any other address without an API key is refused;
- with a key, every request must carry `Authorization: Bearer <key>` (compared in constant
  time); the key is read from an environment variable and never printed or logged;
- without a key, the `Host` header must name a loopback address (a web page cannot reach the
  server through DNS rebinding) and POST bodies must be `application/json` (a web page cannot
  send one, nor a DELETE, without the browser asking the server first, and the server never
  says yes);
- a bad request gets a 4xx with an OpenAI-style error body; a failure inside the model gets a
  500 with the exception's type only; no traceback is ever sent.
Adapter paths are read on the server's own file system: whoever may call the server may make it
load any adapter directory it can read (safetensors only, so no code runs from one).
"""
from __future__ import annotations

from ..errors import AdaptlabError
from .guard import DEFAULT_HOST, DEFAULT_KEY_ENV, api_key_from_env, check_bind, is_loopback
from .http import MAX_BODY_BYTES, Handler
from .protocol import (DEFAULT_MAX_TOKENS, MAX_TOKENS_LIMIT, BadRequest, ChatRequest,
                       check_model_name, parse_request)
from .server import OpenAIServer

__all__ = ["DEFAULT_HOST", "DEFAULT_KEY_ENV", "DEFAULT_MAX_TOKENS", "MAX_BODY_BYTES",
           "MAX_TOKENS_LIMIT", "BadRequest", "ChatRequest", "OpenAIServer", "api_key_from_env",
           "check_bind", "is_loopback", "make_server", "parse_request", "run", "serve_model"]


def make_server(lm, model_name: str, host: str = DEFAULT_HOST, port: int = 8000,
                api_key: str | None = None, max_tokens_limit: int = MAX_TOKENS_LIMIT) -> OpenAIServer:
    """Bind (port 0: any free port) and return the server; `serve_forever()` starts answering
    and `server_close()` stops its worker. `lm` is any LM (LocalLM, FakeLM...) and may be set
    on the server after binding; adapters need one with `set_adapter` (AdapterHost)."""
    check_bind(host, api_key)
    try:
        return OpenAIServer(lm, model_name, host, port, api_key, max_tokens_limit, Handler)
    except OSError as e:
        raise AdaptlabError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def serve_model(model: str, adapters: dict[str, str] | None = None, host: str = DEFAULT_HOST,
                port: int = 8000, api_key_env: str | None = None, precision: str = "fp32",
                batch_size: int = 8) -> None:
    """Serve `model` (a LocalLM with `batch_size` decode slots) as `model`, and each adapter
    directory in `adapters` under its name, until interrupted. The key clients must send comes
    from $`api_key_env`, else $ADAPTLAB_API_KEY if set; without one only a loopback host is
    allowed. Everything is checked and the port bound before the model loads."""
    from ..errors import requires
    from ..models import resolve
    from ..models.load import check_adapter_dir

    requires("train")
    from ..lm.local import LocalLM

    key = api_key_from_env(api_key_env)
    check_bind(host, key)
    if batch_size < 1:
        raise AdaptlabError(f"batch size must be at least 1, got {batch_size}")
    adapters = dict(adapters or {})
    for name, path in adapters.items():
        check_model_name(name)
        check_adapter_dir(path)
    resolve(model)
    server = make_server(None, model, host=host, port=port, api_key=key)
    try:
        server.lm = LocalLM(model, precision=precision, batch_size=batch_size)
        for name, path in adapters.items():
            server.add_adapter(name, path)
    except BaseException:
        server.server_close()
        raise
    run(server)


def run(server: OpenAIServer) -> None:
    """Answer requests until interrupted (Ctrl-C), then close the socket and the worker."""
    from .. import progress

    auth = "API key required" if server.needs_key else "no API key: local requests only"
    names = ", ".join([server.model_name, *server.adapters])
    progress.log(f"serving {names} at {server.url} ({auth}); Ctrl-C stops")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        progress.log("stopped")
    finally:
        server.server_close()
