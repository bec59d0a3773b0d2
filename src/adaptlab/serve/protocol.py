"""The OpenAI wire format: request bodies in (checked), response and stream-chunk bodies out."""
from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from dataclasses import dataclass, replace

from ..errors import AdaptlabError
from ..lm.base import GenParams

DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 4096
MAX_STOP = 4
MAX_N = 16
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
UNSUPPORTED = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+:@-]{0,127}")


class BadRequest(AdaptlabError):
    """A client error: answered with this status and message, never a traceback."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.param, self.kind, self.code = status, param, kind, code


def no_such_model(name: str) -> BadRequest:
    return BadRequest(f"The model `{name[:200]}` does not exist (see GET /v1/models)", 404,
                      "model", code="model_not_found")


def check_model_name(name) -> str:
    """An adapter's served name: 1-128 of letters, digits and . _ + : @ - (no slash: it is
    a path segment in DELETE /v1/adapters/<name>)."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise BadRequest(f"name: expected 1-128 letters, digits or . _ + : @ - (starting with a "
                         f"letter or digit), got {json.dumps(name)[:60]}", param="name")
    return name


# -- requests -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ChatRequest:
    """One checked chat-completions request."""

    model: str | None
    chat: list[dict]
    params: GenParams
    n: int = 1
    stream: bool = False
    include_usage: bool = False

    def generations(self) -> list[GenParams]:
        """What to generate: once at temperature 0 (the n choices are equal, greedy), else n
        samples, choice i seeded with `derive_seed(seed, i)` (choice 0 keeps the request seed)."""
        if self.params.temperature == 0:
            return [self.params]
        return [replace(self.params, seed=derive_seed(self.params.seed, i)) for i in range(self.n)]


def derive_seed(seed: int, i: int) -> int:
    """Choice i's seed: the request's for i = 0, else a hash of (seed, i) in [0, 2**31)."""
    if i == 0:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{i}".encode()).digest()[:4], "big") >> 1


def batch_key(model: str, p: GenParams) -> tuple:
    """Rows with equal keys can share one `chat` call: same model, same parameters (greedy
    decoding ignores seed and top_p)."""
    return (model, replace(p, seed=0, top_p=1.0) if p.temperature == 0 else p)


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


def _flag(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise BadRequest(f"{name}: expected true or false", param=name)
    return bool(value)


def _model(body: dict) -> str | None:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise BadRequest("model: expected a string", param="model")
    return model or None


def _gen_params(body: dict, max_tokens_limit: int) -> GenParams:
    # DSPy 3.4 and newer OpenAI clients send max_completion_tokens; older ones max_tokens
    name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = _number(body, name, min(DEFAULT_MAX_TOKENS, max_tokens_limit), int, 1,
                         max_tokens_limit)
    top_p = _number(body, "top_p", 1.0, float, 0, 1)
    if top_p <= 0:
        raise BadRequest("top_p: must be greater than 0", param="top_p")
    return GenParams(max_new_tokens=max_tokens,
                     temperature=_number(body, "temperature", 1.0, float, 0, 2),
                     top_p=top_p, seed=_number(body, "seed", 0, int, -(2**63), 2**63 - 1),
                     stop=_stop(body))


def parse_request(body, max_tokens_limit: int = MAX_TOKENS_LIMIT) -> ChatRequest:
    """A chat-completions request body -> ChatRequest; BadRequest says what is wrong. Fields
    not known here are ignored (clients send many); ones that would change the answer's kind
    (tools, logprobs) are refused."""
    if not isinstance(body, dict):
        raise BadRequest("request body: expected a JSON object")
    for name in UNSUPPORTED:
        if body.get(name):
            raise BadRequest(f"{name}: not supported by this server", param=name)
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise BadRequest("stream_options: expected an object", param="stream_options")
    return ChatRequest(model=_model(body), chat=parse_messages(body.get("messages")),
                       params=_gen_params(body, max_tokens_limit),
                       n=_number(body, "n", 1, int, 1, MAX_N), stream=_flag(body, "stream"),
                       include_usage=bool((options or {}).get("include_usage")))


def parse_adapter(body) -> tuple[str, str]:
    """A POST /v1/adapters body -> (name, path)."""
    if not isinstance(body, dict):
        raise BadRequest("request body: expected a JSON object")
    path = body.get("path")
    if not isinstance(path, str) or not path:
        raise BadRequest("path: expected the adapter directory (a string)", param="path")
    return check_model_name(body.get("name")), path


# -- responses ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """One generated text with its token counts."""

    text: str
    prompt_tokens: int
    completion_tokens: int


def finish_reason(a: Answer, p: GenParams) -> str:
    return "length" if a.completion_tokens >= p.max_new_tokens else "stop"


def usage(answers: list[Answer]) -> dict:
    """The prompt counted once, the completions summed over choices (as OpenAI does)."""
    prompt, completion = answers[0].prompt_tokens, sum(a.completion_tokens for a in answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def _head(model: str, kind: str) -> dict:
    return {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": kind, "created": int(time.time()),
            "model": model}


def completion(model: str, answers: list[Answer], p: GenParams) -> dict:
    """A chat.completion body with one choice per answer."""
    choices = [{"index": i, "message": {"role": "assistant", "content": a.text},
                "finish_reason": finish_reason(a, p), "logprobs": None}
               for i, a in enumerate(answers)]
    return {**_head(model, "chat.completion"), "choices": choices, "usage": usage(answers)}


def pieces(text: str) -> list[str]:
    """`text` in stream-sized pieces (a word and the space after it); they join to `text`."""
    return re.findall(r"\s*\S+\s*|\s+", text) if text else []


def chunks(model: str, answers: list[Answer], p: GenParams, include_usage: bool) -> list[dict]:
    """The chat.completion.chunk bodies of a stream: per choice a role delta, the text in
    pieces, a finish delta; with include_usage a last chunk with no choices and the usage."""
    head = _head(model, "chat.completion.chunk")

    def chunk(i: int, delta: dict, finish: str | None = None) -> dict:
        return {**head, "choices": [{"index": i, "delta": delta, "logprobs": None,
                                     "finish_reason": finish}]}

    out = []
    for i, a in enumerate(answers):
        out.append(chunk(i, {"role": "assistant", "content": ""}))
        out.extend(chunk(i, {"content": piece}) for piece in pieces(a.text))
        out.append(chunk(i, {}, finish_reason(a, p)))
    if include_usage:
        out.append({**head, "choices": [], "usage": usage(answers)})
    return out


def model_card(name: str, created: int, parent: str | None = None) -> dict:
    card = {"id": name, "object": "model", "created": created, "owned_by": "adaptlab"}
    return card if parent is None else {**card, "parent": parent, "root": parent}
