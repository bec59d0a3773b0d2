"""The server object: one model, the adapters served on it, the generation queue."""
from __future__ import annotations

import logging
import socket
import threading
import time
from dataclasses import dataclass
from http.server import ThreadingHTTPServer

from ..errors import AdaptlabError
from ..lm.base import AdapterHost, GenParams, cut_at_stop, supports
from . import protocol as proto
from .batcher import Batcher
from .guard import key_ok
from .protocol import Answer, BadRequest

log = logging.getLogger(__name__)

MAX_WAITING = 1024
GATHER_S = 0.05
"""How long a request waits for others to share its generation (a client's threads send theirs
within milliseconds of each other), unless the model's batch (`batch_size`, else 64) is full
sooner."""
_UNKNOWN = object()  # the adapter in the LM after a failed swap: set it again next time


@dataclass(frozen=True)
class _Row:
    """One generation: a chat under a served model name, with its parameters."""

    model: str
    chat: list[dict]
    params: GenParams


def _count_tokens(lm, chat: list[dict], text: str) -> tuple[int, int]:
    """(prompt, completion) token counts with the model's tokenizer; word counts without one."""
    tok = getattr(lm, "tok", None)
    if tok is None:
        return sum(len(m["content"].split()) for m in chat), len(text.split())
    from ..models.chat import render_ids

    return (len(render_ids(tok, chat, add_generation_prompt=True)),
            len(tok(text, add_special_tokens=False).input_ids))


class OpenAIServer(ThreadingHTTPServer):
    """Holds the model (`lm`, which may be set after binding), the adapters served on it by
    name, the key, and the queue whose one worker thread runs every generation.

    `model_name` is the base model's served name; `add_adapter(name, path)` serves base + the
    LoRA adapter at `path` as `name` and `remove_adapter(name)` stops it (the Python side of
    POST and DELETE /v1/adapters). `lock` is held while the LM generates or swaps adapters."""

    daemon_threads = True

    def __init__(self, lm, model_name: str, host: str, port: int, api_key: str | None,
                 max_tokens_limit: int, handler):
        if ":" in host.strip("[]"):
            self.address_family = socket.AF_INET6
        self.lm, self.model_name, self.max_tokens_limit = lm, model_name, max_tokens_limit
        self._api_key = api_key.encode() if api_key else None
        self.lock = threading.Lock()
        self.adapters: dict[str, str] = {}
        """Served name -> adapter directory."""
        self._names = threading.Lock()  # guards `adapters` (lookups must not wait for `lock`)
        self._active = None  # the adapter directory in the LM now (None: the bare base)
        self.created = int(time.time())
        self.usage: dict[str, dict[str, int]] = {}
        """Served name -> {"generations", "prompt_tokens", "completion_tokens"} answered so far."""
        super().__init__((host.strip("[]"), port), handler)
        self.batcher = Batcher(self._generate, MAX_WAITING, GATHER_S,
                               lambda: getattr(self.lm, "batch_size", None) or 64)

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
        return key_ok(header, self._api_key)

    def server_close(self) -> None:
        self.batcher.close()
        super().server_close()

    # -- models and adapters ----------------------------------------------------------------

    def set_lm(self, lm) -> None:
        """Serve `lm` from now on (None: no model; requests get a 503 until one is set). The
        adapters stay served by name and load into the new model when next asked for."""
        with self.lock:
            self.lm, self._active = lm, None

    def models(self) -> dict:
        with self._names:
            names = list(self.adapters)
        cards = [proto.model_card(self.model_name, self.created)]
        cards += [proto.model_card(n, self.created, self.model_name) for n in names]
        return {"object": "list", "data": cards}

    def model(self, name: str) -> dict:
        self.adapter_of(name)
        parent = None if name == self.model_name else self.model_name
        return proto.model_card(name, self.created, parent)

    def adapter_of(self, model: str) -> str | None:
        """The adapter directory served as `model` (None for the base); 404 for other names."""
        if model == self.model_name:
            return None
        with self._names:
            path = self.adapters.get(model)
        if path is None:
            raise proto.no_such_model(model)
        return path

    def add_adapter(self, name: str, path: str) -> dict:
        """Serve base + the LoRA adapter in directory `path` as model `name`. The adapter is
        loaded into the model now, so one that does not fit the base is refused here (400)
        (with no model loaded, it is checked as a directory and loaded when first used)."""
        proto.check_model_name(name)
        with self._names:
            if name == self.model_name or name in self.adapters:
                raise BadRequest(f"model `{name}` is already served (DELETE /v1/adapters/{name} "
                                 "first)", 409, "name", kind="conflict_error")
        path = self._check_adapter_dir(path)
        with self.lock:
            if self.lm is not None:  # without a model (unloaded), it loads when first asked for
                self._check_swappable()
                self._try_load(name, path)
            with self._names:
                self.adapters[name] = path
        log.info("serving adapter %s", name)
        return proto.model_card(name, self.created, self.model_name)

    def remove_adapter(self, name: str) -> dict:
        """Stop serving adapter `name`; the model goes back to its bare base if it had it in."""
        if name == self.model_name:
            raise BadRequest("the base model cannot be unloaded", 400, "name")
        self.adapter_of(name)
        with self.lock:
            with self._names:
                path = self.adapters.pop(name, None)
                still_used = path in self.adapters.values()
            if path is None:
                raise proto.no_such_model(name)
            if self._active == path and not still_used:
                self._use(None)
        log.info("stopped serving adapter %s", name)
        return {"id": name, "object": "model", "deleted": True}

    @staticmethod
    def _check_adapter_dir(path: str) -> str:
        from ..models.load import check_adapter_dir  # safetensors only, never a pickle

        try:
            return str(check_adapter_dir(path).resolve())
        except AdaptlabError as e:
            raise BadRequest(str(e), 400, "path") from None

    def _check_swappable(self) -> None:
        if not supports(self.lm, AdapterHost):
            raise BadRequest("this server's model cannot swap adapters", 400)
        base = getattr(self.lm, "base_name", self.lm.name)
        if self._active is None and self.lm.name != base:
            raise BadRequest("this server's model was loaded with an adapter in it; serve the "
                             "bare base and add adapters by name to swap them", 409,
                             kind="conflict_error")

    def _try_load(self, name: str, path: str) -> None:
        try:
            self._use(path)
        except AdaptlabError as e:
            raise BadRequest(f"cannot load adapter `{name}`: {e}", 400, "path") from None
        except Exception as e:  # e.g. shapes that do not fit this base; the type only
            log.exception("loading adapter %s failed", name)
            raise BadRequest(f"cannot load adapter `{name}` ({type(e).__name__}; was it "
                             f"trained on {self.model_name}?)", 400, "path") from None

    def _use(self, path: str | None) -> None:
        """Put the adapter at `path` (None: none) in the LM, unless it is there already."""
        if path == self._active:
            return
        self._active = _UNKNOWN
        self.lm.set_adapter(path)
        self._active = path

    # -- generation -------------------------------------------------------------------------

    def complete(self, body) -> dict | list[dict]:
        """A chat-completions body -> the response body, or for `stream` the chunk bodies.
        Waits for the worker thread, which batches it with other waiting requests."""
        req = proto.parse_request(body, self.max_tokens_limit)
        model = req.model or self.model_name
        self.adapter_of(model)  # unknown names: 404 before anything waits
        rows = [_Row(model, req.chat, p) for p in req.generations()]
        futures = self.batcher.submit([(proto.batch_key(model, r.params), r) for r in rows])
        answers = [f.result() for f in futures]
        if len(answers) < req.n:  # greedy: the n choices are equal
            answers = answers * req.n
        if req.stream:
            return proto.chunks(model, answers, req.params, req.include_usage)
        return proto.completion(model, answers, req.params)

    def _generate(self, rows: list[_Row]) -> list[Answer]:
        """On the worker thread: one `chat` call for rows that share a model and parameters."""
        params = rows[0].params
        with self.lock:
            if self.lm is None:
                raise BadRequest("no model is loaded now (it was unloaded; launch it again)", 503,
                                 kind="server_error")
            self._use(self.adapter_of(rows[0].model))
            texts = self.lm.chat([r.chat for r in rows], params)
            if len(texts) != len(rows):
                raise RuntimeError(f"{len(texts)} texts for {len(rows)} chats")
            answers = [self._answer(r.chat, cut_at_stop(t, params.stop), params.max_new_tokens)
                       for r, t in zip(rows, texts)]
        use = self.usage.setdefault(rows[0].model, dict.fromkeys(
            ("generations", "prompt_tokens", "completion_tokens"), 0))
        use["generations"] += len(answers)
        use["prompt_tokens"] += sum(a.prompt_tokens for a in answers)
        use["completion_tokens"] += sum(a.completion_tokens for a in answers)
        return answers

    def _answer(self, chat: list[dict], text: str, max_new_tokens: int) -> Answer:
        """The text's counts are re-tokenizations (the LM returns text): the decoded text of n
        generated tokens can re-tokenize to more than n, so the completion count is capped at
        the budget the generation had."""
        prompt, completion = _count_tokens(self.lm, chat, text)
        return Answer(text, prompt, min(completion, max_new_tokens))
