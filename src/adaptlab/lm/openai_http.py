"""An LM backend over any OpenAI-compatible chat-completions endpoint.

Works with the OpenAI API and with local servers that speak the same protocol
(vLLM, llama.cpp server, TGI, Ollama...). The API key is read from an
environment variable and never kept on this object, shown in its repr, or put
in an error message.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Sequence

from adaptlab.errors import AdaptlabError, require
from adaptlab.lm.base import Chat, GenParams, OnResult, cut_at_stop

log = logging.getLogger(__name__)

MAX_BACKOFF_S = 30.0
MAX_RETRY_AFTER_S = 60.0
JITTER_FRACTION = 0.1
RETRYABLE_4XX = (408, 429)
AUTH_CODES = (401, 403)  # their server messages may echo part of the key: leave them out
KEY_FRAGMENT = 6


class _Retryable(Exception):
    """A failed attempt worth retrying; `status` says what went wrong."""

    def __init__(self, status: str, retry_after: float | None = None):
        super().__init__(status)
        self.status = status
        self.retry_after = retry_after


class _Aborted(Exception):
    """Another request of the same batch failed for good; stop this one."""


class OpenAILM:
    """Batches of chats sent concurrently to /chat/completions; texts back in order."""

    answers_each = True  # each chat is its own request: see adaptlab.lm.base.chat_each

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 4,
        max_retries: int = 5,
        timeout: float = 60.0,
        backoff: float = 1.0,
    ):
        if concurrency < 1:
            raise AdaptlabError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise AdaptlabError(f"max_retries must be >= 0, got {max_retries}")
        self._openai = require("openai", "openai")
        self.model = model
        self.base_url = base_url
        self.api_key_env = api_key_env
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.timeout = timeout
        self.backoff = backoff
        self.name = f"openai:{model}@{base_url or 'default'}"
        self._client = self._make_client()

    # -- construction, repr, pickling (the client holds the key: never expose it) --

    def _api_key(self) -> str:
        return os.environ.get(self.api_key_env) or "EMPTY"

    def _make_client(self):
        return self._openai.OpenAI(
            api_key=self._api_key(),
            base_url=self.base_url,
            timeout=self.timeout,
            max_retries=0,  # retries are done here, with our own policy
        )

    def __repr__(self) -> str:
        return (
            f"OpenAILM(model={self.model!r}, base_url={self.base_url!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency}, "
            f"max_retries={self.max_retries}, timeout={self.timeout}, backoff={self.backoff})"
        )

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k not in ("_client", "_openai")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._openai = require("openai", "openai")
        self._client = self._make_client()

    def close(self) -> None:
        self._client.close()

    # -- the LM protocol --

    def chat(self, chats: Sequence[Chat], params: GenParams,
             on_result: OnResult | None = None) -> list[str]:
        """Answers in order. `on_result(i, text)` is called on this thread as each one arrives;
        when a request fails for good the others stop, but those already answered are still
        handed to `on_result` before the error is raised."""
        chats = list(chats)
        if not chats:
            return []
        abort = threading.Event()
        texts: list[str] = [""] * len(chats)
        error: BaseException | None = None
        workers = min(self.concurrency, len(chats))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai-lm") as pool:
            futures = {pool.submit(self._one, i, c, params, abort): i for i, c in enumerate(chats)}
            try:
                for f in as_completed(futures):
                    try:
                        text = cut_at_stop(f.result(), params.stop)
                    except _Aborted:
                        continue
                    except Exception as e:
                        error = error or e
                        abort.set()
                        continue
                    texts[futures[f]] = text
                    if on_result is not None:
                        on_result(futures[f], text)
            except BaseException:
                abort.set()
                for f in futures:
                    f.cancel()
                raise
        if error is not None:
            raise error
        return texts

    # -- one request, with retries --

    def _one(self, index: int, chat: Chat, params: GenParams, abort: threading.Event) -> str:
        rng = random.Random(f"{params.seed}:{index}")
        status = "no attempt"
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise _Aborted()
            try:
                return self._attempt(chat, params)
            except _Retryable as e:
                status = e.status
                if attempt == self.max_retries:
                    break
                delay = self._delay(attempt, e.retry_after, rng)
                log.debug("%s: %s, retry %d in %.2fs", self.name, status, attempt + 1, delay)
                if abort.wait(delay):
                    raise _Aborted() from None
        raise AdaptlabError(
            f"OpenAI-compatible endpoint {self._endpoint()} failed after "
            f"{self.max_retries + 1} attempts (last status: {status})"
        )

    def _delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, MAX_RETRY_AFTER_S)
        base = min(self.backoff * 2**attempt, MAX_BACKOFF_S)
        return base + rng.uniform(0, JITTER_FRACTION * base)

    def _attempt(self, chat: Chat, params: GenParams) -> str:
        try:
            resp = self._client.chat.completions.create(**self._request(chat, params))
        except self._openai.APIStatusError as e:
            raise self._status_error(e) from None
        except self._openai.APITimeoutError:
            raise _Retryable("timeout") from None
        except self._openai.APIConnectionError:
            raise _Retryable("connection error") from None
        except (self._openai.APIResponseValidationError, json.JSONDecodeError):
            # a body that is not valid JSON escapes the client as a bare JSONDecodeError
            raise _Retryable("invalid JSON response") from None
        return self._text(resp)

    def _request(self, chat: Chat, params: GenParams) -> dict:
        req = {
            "model": self.model,
            "messages": list(chat),
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "seed": params.seed,
        }
        if params.stop:
            req["stop"] = list(params.stop)
        return req

    def _status_error(self, e) -> Exception:
        code = e.status_code
        if code >= 500 or code in RETRYABLE_4XX:
            return _Retryable(f"HTTP {code}", _retry_after(e.response.headers))
        msg = f"OpenAI-compatible endpoint {self._endpoint()} refused the request (HTTP {code})"
        if code in AUTH_CODES:
            return AdaptlabError(f"{msg}; check the key in ${self.api_key_env}")
        detail = " ".join(self._scrub(str(getattr(e, "message", "") or "")).split())[:200]
        return AdaptlabError(f"{msg}: {detail}" if detail else msg)

    @staticmethod
    def _text(resp) -> str:
        """The first choice's content; a body without one counts as an invalid response."""
        try:
            content = resp.choices[0].message.content
        except (AttributeError, IndexError, KeyError, TypeError):
            raise _Retryable("invalid JSON response") from None
        return content or ""

    def _endpoint(self) -> str:
        return self.base_url or "default"

    def _scrub(self, text: str) -> str:
        """Mask every word that shares KEY_FRAGMENT characters in a row with the key: servers
        quote keys whole or in part ("sk-abcd1234****wxyz")."""
        key = os.environ.get(self.api_key_env)
        if not key:
            return text
        n = min(KEY_FRAGMENT, len(key))
        parts = {key[i : i + n] for i in range(len(key) - n + 1)}
        return re.sub(r"\S+", lambda m: "***" if any(p in m[0] for p in parts) else m[0], text)


def _retry_after(headers) -> float | None:
    """Seconds from a Retry-After header, or None if absent or not a number."""
    value = headers.get("retry-after") if headers is not None else None
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(seconds, 0.0)
