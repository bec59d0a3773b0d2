"""OpenAILM against a real local HTTP server speaking /v1/chat/completions."""
from __future__ import annotations

import pickle
import socket
import time
import uuid

import pytest
from faultserver import FAULTS, FaultServer, completion, echo, error_body

pytest.importorskip("openai")

from adaptlab.errors import AdaptlabError  # noqa: E402
from adaptlab.lm.base import GenParams  # noqa: E402
from adaptlab.lm.openai_http import OpenAILM  # noqa: E402

KEY_ENV = "ADAPTLAB_TEST_OPENAI_KEY"


@pytest.fixture
def server():
    with FaultServer() as s:
        yield s


@pytest.fixture
def secret(monkeypatch):
    value = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, value)
    return value


def make_lm(server, **kw) -> OpenAILM:
    kw.setdefault("backoff", 0.01)
    kw.setdefault("max_retries", 5)
    kw.setdefault("timeout", 10.0)
    return OpenAILM("test-model", base_url=server.url, api_key_env=KEY_ENV, **kw)


def chats(n: int) -> list[list[dict]]:
    return [[{"role": "system", "content": "be brief"}, {"role": "user", "content": f"q{i}"}]
            for i in range(n)]


P = GenParams(max_new_tokens=7, temperature=0.5, top_p=0.9, seed=3, stop=("END",))


def test_batch_answers_in_order_with_concurrency(server, secret):
    server.answer_delay = 0.1
    lm = make_lm(server, concurrency=3)
    out = lm.chat(chats(6), P)
    assert out == [f"echo: q{i}" for i in range(6)]
    assert len(server.requests) == 6
    assert 1 < server.max_in_flight <= 3
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert body["model"] == "test-model"
    assert body["temperature"] == 0.5 and body["top_p"] == 0.9
    assert body["max_tokens"] == 7 and body["seed"] == 3 and body["stop"] == ["END"]
    assert body["messages"][0] == {"role": "system", "content": "be brief"}
    assert lm.name == f"openai:test-model@{server.url}"


def test_empty_batch_sends_nothing(server, secret):
    assert make_lm(server).chat([], P) == []
    assert server.requests == []


def test_stop_strings_cut_as_safety_net(server, secret):
    server.answer = lambda body: echo(body) + " END trailing"
    out = make_lm(server).chat(chats(2), P)
    assert out == ["echo: q0 ", "echo: q1 "]


def test_429_with_retry_after_then_success(server, secret):
    server.reply(429, error_body("slow down"), headers={"Retry-After": "0"})
    lm = make_lm(server, backoff=10.0)  # Retry-After: 0 must win over a 10 s backoff
    t0 = time.monotonic()
    assert lm.chat(chats(1), P) == ["echo: q0"]
    assert time.monotonic() - t0 < 5
    assert len(server.requests) == 2


def test_5xx_twice_then_success(server, secret):
    server.reply(500, error_body("boom"))
    server.reply(503, error_body("busy"))
    assert make_lm(server).chat(chats(1), P) == ["echo: q0"]
    assert len(server.requests) == 3


@pytest.mark.parametrize(
    "body,ctype",
    [
        (b'{"id": "x", "choices": [{"ind', "application/json"),  # truncated
        (b"not json at all", "application/json"),
        (b'{"id": "x"}', "application/json"),  # valid JSON, no choices
        (b"<html>gateway</html>", "text/html"),
    ],
)
def test_invalid_json_then_success(server, secret, body, ctype):
    server.reply(200, body, content_type=ctype)
    assert make_lm(server).chat(chats(1), P) == ["echo: q0"]
    assert len(server.requests) == 2


def test_401_raises_immediately(server, secret):
    server.reply(401, error_body("Incorrect API key provided"))
    with pytest.raises(AdaptlabError) as ei:
        make_lm(server).chat(chats(1), P)
    assert len(server.requests) == 1
    assert "401" in str(ei.value) and server.url in str(ei.value)
    assert "\n" not in str(ei.value)


@pytest.mark.parametrize("status", [400, 404])
def test_other_client_errors_raise_immediately(server, secret, status):
    server.reply(status, error_body("no such model"))
    with pytest.raises(AdaptlabError, match=str(status)):
        make_lm(server).chat(chats(1), P)
    assert len(server.requests) == 1


def test_exhausted_retries_raise(server, secret):
    for _ in range(10):
        server.reply(500, error_body("boom"))
    with pytest.raises(AdaptlabError) as ei:
        make_lm(server, max_retries=2).chat(chats(1), P)
    assert len(server.requests) == 3  # one try plus two retries
    msg = str(ei.value)
    assert server.url in msg and "500" in msg and "\n" not in msg


def test_failure_in_batch_stops_the_rest(server, secret):
    server.reply(401, error_body("nope"))
    server.answer_delay = 0.05
    with pytest.raises(AdaptlabError):
        make_lm(server, concurrency=2).chat(chats(20), P)
    assert len(server.requests) < 20


def test_timeout_is_retried_then_reported(server, secret):
    server.reply(200, completion("late"), delay=1.0)
    server.reply(200, completion("late"), delay=1.0)
    with pytest.raises(AdaptlabError, match="timeout"):
        make_lm(server, timeout=0.2, max_retries=1).chat(chats(1), P)
    assert len(server.requests) == 2


def test_connection_error_is_retried_then_reported(secret):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    url = f"http://127.0.0.1:{port}/v1"
    lm = OpenAILM("m", base_url=url, api_key_env=KEY_ENV, max_retries=1, backoff=0.01, timeout=2)
    with pytest.raises(AdaptlabError, match="connection error") as ei:
        lm.chat(chats(1), P)
    assert url in str(ei.value)


def test_api_key_sent_but_never_shown(server, secret):
    lm = make_lm(server, max_retries=1)
    assert lm.chat(chats(1), P) == ["echo: q0"]
    assert server.requests[0]["auth"] == f"Bearer {secret}"
    assert secret not in repr(lm) and secret not in str(lm)
    assert secret not in repr({k: v for k, v in vars(lm).items() if k != "_client"})
    assert secret.encode() not in pickle.dumps(lm)

    errors = []
    # servers may echo the key back; none of it may reach our messages
    for status in (401, 400):
        server.reply(status, error_body(f"Incorrect API key provided: {secret}"))
        with pytest.raises(AdaptlabError) as ei:
            lm.chat(chats(1), P)
        errors.append(ei.value)
    for _ in range(2):
        server.reply(503, error_body(f"key {secret} overloaded"))
    with pytest.raises(AdaptlabError) as ei:
        lm.chat(chats(1), P)
    errors.append(ei.value)
    for e in errors:
        assert secret not in str(e) and secret not in repr(e)
        assert secret[-8:] not in str(e)


def test_missing_key_env_sends_placeholder(server, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    lm = make_lm(server)
    assert lm.chat(chats(1), P) == ["echo: q0"]
    assert server.requests[0]["auth"] == "Bearer EMPTY"


def test_pickle_roundtrip_rebuilds_client(server, secret):
    lm = pickle.loads(pickle.dumps(make_lm(server)))
    assert lm.chat(chats(1), P) == ["echo: q0"]
    assert server.requests[0]["auth"] == f"Bearer {secret}"


@pytest.mark.parametrize("kind", FAULTS)
def test_each_fault_kind_is_retried(kind, secret):
    with FaultServer(slow_s=1.0) as s:
        s.script(kind)
        assert make_lm(s, timeout=0.3).chat(chats(1), P) == ["echo: q0"]
        assert [r["outcome"] for r in s.requests] == [kind, "answer"]
        assert s.faults == {kind: 1} and s.answered == {"q0": 1}


def test_fault_server_lists_models(server, secret):
    models = make_lm(server)._client.models.list()
    assert [m.id for m in models.data] == ["test-model"]
