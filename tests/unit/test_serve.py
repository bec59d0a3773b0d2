"""`adaptlab serve`: the OpenAI-compatible server, with a fake LM (no model loads)."""
from __future__ import annotations

import inspect
import json
import logging
import threading
import time
import uuid

import pytest

from adaptlab import cli
from adaptlab.errors import AdaptlabError
from adaptlab.lm.base import GenParams
from adaptlab.lm.fake import FakeLM
from adaptlab.serve import DEFAULT_KEY_ENV, make_server
from serving import request, served

KEY_ENV = "ADAPTLAB_TEST_SERVE_KEY"
UNSET_ENV = "ADAPTLAB_TEST_SERVE_UNSET"


@pytest.fixture(autouse=True)
def no_default_key(monkeypatch):
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)
    monkeypatch.delenv(UNSET_ENV, raising=False)


CHAT = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "max_tokens": 9, "temperature": 0.0, "seed": 4}


def openai_lm(server, key_env=UNSET_ENV):
    pytest.importorskip("openai")
    from adaptlab.lm.openai_http import OpenAILM

    return OpenAILM("fake-model", base_url=server.url, api_key_env=key_env, max_retries=0, timeout=10)


# -- the protocol ---------------------------------------------------------------------------

def test_round_trip_through_adaptlab_openai_client():
    with served() as server:
        lm = openai_lm(server)
        p = GenParams(max_new_tokens=5, temperature=0.7, top_p=0.9, seed=11)
        out = lm.chat([[{"role": "user", "content": "q1"}], [{"role": "user", "content": "q2"}]], p)
        lm.close()
    assert out == [f"max=5 t=0.7 top_p=0.9 seed=11 | q{i}" for i in (1, 2)]


def test_completion_count_never_exceeds_the_budget():
    """Counts come from re-tokenizing the text, which can give more tokens than were generated
    (here the fake LM's 7 words at max_tokens=3): the count is capped at the budget."""
    with served() as server:
        status, body, _ = request(server, "POST", "/v1/chat/completions", {**CHAT, "max_tokens": 3})
    assert status == 200
    assert body["usage"]["completion_tokens"] == 3
    assert body["choices"][0]["finish_reason"] == "length"


def test_response_shape_and_usage():
    with served() as server:
        status, body, _ = request(server, "POST", "/v1/chat/completions", CHAT)
    assert status == 200
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "fake-model" and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": "max=9 t=0.0 top_p=1.0 seed=4 | hello there"}
    # without a tokenizer the fake counts words: 2 + 2 prompt words, 7 completion words
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 7, "total_tokens": 11}


def test_stop_strings_and_text_parts():
    lm = FakeLM(lambda chat, p: "one two END three")
    with served(lm) as server:
        msgs = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
        status, body, _ = request(server, "POST", "/v1/chat/completions", {"messages": msgs, "stop": "END"})
    assert status == 200 and body["choices"][0]["message"]["content"] == "one two "


def test_models_endpoint():
    with served() as server:
        status, body, _ = request(server, "GET", "/v1/models")
    assert status == 200
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["fake-model"]


def test_generation_is_serialized():
    state = {"now": 0, "max": 0}
    guard = threading.Lock()

    def slow(chat, p):
        with guard:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
        time.sleep(0.05)
        with guard:
            state["now"] -= 1
        return "ok"

    with served(FakeLM(slow)) as server:
        results = []
        threads = [threading.Thread(target=lambda: results.append(
            request(server, "POST", "/v1/chat/completions", CHAT)[0])) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
    assert results == [200] * 4 and state["max"] == 1


# -- bad requests ---------------------------------------------------------------------------

@pytest.mark.parametrize("body, fragment", [
    ({}, "messages: expected a non-empty list"),
    ({"messages": []}, "messages: expected a non-empty list"),
    ({"messages": [{"role": "bot", "content": "x"}]}, "messages[0].role: expected one of"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens: must be between"),
    ({"messages": [{"role": "user", "content": "x"}], "max_tokens": "5"}, "max_tokens: expected an integer"),
    ({"messages": [{"role": "user", "content": "x"}], "temperature": -1}, "temperature: must be between"),
    ({"messages": [{"role": "user", "content": "x"}], "top_p": 0}, "top_p: must be greater than 0"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 0}, "n: must be between 1 and 16"),
    ({"messages": [{"role": "user", "content": "x"}], "n": 17}, "n: must be between 1 and 16"),
    ({"messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream: expected true or false"),
    ({"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": 0},
     "max_completion_tokens: must be between"),
    ({"messages": [{"role": "user", "content": "x"}], "model": 3}, "model: expected a string"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]}, "tools: not supported"),
    ({"messages": [{"role": "user", "content": "x"}], "stop": [1]}, "stop:"),
    ([1, 2], "expected a JSON object"),
])
def test_bad_request_body_is_400(body, fragment):
    with served() as server:
        status, resp, _ = request(server, "POST", "/v1/chat/completions", body)
    assert status == 400
    assert fragment in resp["error"]["message"]
    assert resp["error"]["type"] == "invalid_request_error"


def test_bad_json_is_400_without_traceback():
    with served() as server:
        status, resp, _ = request(server, "POST", "/v1/chat/completions", raw=b'{"messages": [')
    assert status == 400
    assert resp["error"]["message"].startswith("request body is not valid JSON")
    assert "Traceback" not in json.dumps(resp)


def test_other_client_errors():
    with served() as server:
        assert request(server, "POST", "/v1/completions", CHAT)[0] == 404
        assert request(server, "GET", "/v1/nothing")[0] == 404
        assert request(server, "POST", "/v1/chat/completions", CHAT,
                       headers={"Content-Type": "text/plain"})[0] == 415
        assert request(server, "POST", "/v1/chat/completions", raw=b"{}",
                       headers={"Content-Length": str(10**9)})[0] == 413
        assert request(server, "DELETE", "/v1/models")[0] == 405
        assert request(server, "PATCH", "/v1/models")[0] == 501  # http.server's own error, as JSON
        # the server still answers after all of these
        assert request(server, "POST", "/v1/chat/completions", CHAT)[0] == 200


def test_model_failure_is_500_with_the_type_only(caplog):
    with served(FakeLM(fail_after=0)) as server, caplog.at_level(logging.ERROR):
        status, resp, _ = request(server, "POST", "/v1/chat/completions", CHAT)
    assert status == 500
    assert resp["error"]["message"] == "the server failed to answer (RuntimeError)"
    assert "simulated crash" not in json.dumps(resp) and "Traceback" not in json.dumps(resp)


def test_without_key_only_local_host_headers_are_answered():
    with served() as server:
        assert request(server, "GET", "/v1/models", headers={"Host": "evil.example:8000"})[0] == 403
        assert request(server, "GET", "/v1/models", headers={"Host": "localhost:8000"})[0] == 200


# -- keys -----------------------------------------------------------------------------------

def test_key_required_when_set(monkeypatch, caplog):
    key = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv(KEY_ENV, key)
    with caplog.at_level(logging.DEBUG), served(api_key=key) as server:
        status, resp, headers = request(server, "GET", "/v1/models")
        assert status == 401 and resp["error"]["type"] == "authentication_error"
        assert headers.get("WWW-Authenticate") == "Bearer"
        for bad in ("Bearer nope", f"Basic {key}", f"Bearer {key}x", key):
            assert request(server, "POST", "/v1/chat/completions", CHAT,
                           headers={"Authorization": bad})[0] == 401
        ok = request(server, "POST", "/v1/chat/completions", CHAT, headers={"Authorization": f"Bearer {key}"})
        assert ok[0] == 200
        # with a key, any Host header is fine (the key is the guard)
        assert request(server, "GET", "/v1/models", headers={"Authorization": f"Bearer {key}",
                                                              "Host": "example.org"})[0] == 200
        # through the client: the right key works, a wrong one is a clear error
        lm = openai_lm(server, KEY_ENV)
        assert lm.chat([[{"role": "user", "content": "hi"}]], GenParams(max_new_tokens=3))[0].endswith("hi")
        monkeypatch.setenv(KEY_ENV, "wrong")
        with pytest.raises(AdaptlabError, match="HTTP 401"):
            openai_lm(server, KEY_ENV).chat([[{"role": "user", "content": "hi"}]], GenParams())
        assert key not in repr(server)
    assert key not in caplog.text


# -- binding --------------------------------------------------------------------------------

def test_default_bind_host_is_loopback():
    from adaptlab import api

    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"
    assert inspect.signature(api.serve).parameters["host"].default == "127.0.0.1"
    args = cli.build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.api_key_env is None


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "192.168.1.10", "myhost.example"])
def test_refuses_non_loopback_without_key(host):
    with pytest.raises(AdaptlabError, match="refusing to serve .* without an API key"):
        make_server(FakeLM(), "fake", host=host, port=0)


def test_non_loopback_with_key_binds():
    server = make_server(FakeLM(), "fake", host="0.0.0.0", port=0, api_key="k")
    server.server_close()


@pytest.fixture
def no_model_loads(monkeypatch):
    import adaptlab.lm.local

    def never(*a, **k):
        raise AssertionError("a model was loaded before the arguments were checked")
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", never)


def cli_error(capsys, argv) -> str:
    t0 = time.monotonic()
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert rc != 0 and out == "" and time.monotonic() - t0 < 5
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("adaptlab: error: "), err
    return lines[0][len("adaptlab: error: "):]


def test_cli_refuses_public_host_without_key(capsys, no_model_loads):
    msg = cli_error(capsys, ["serve", "--host", "0.0.0.0"])
    assert msg.startswith("refusing to serve on 0.0.0.0 without an API key")


def test_cli_named_key_variable_must_be_set(capsys, no_model_loads):
    msg = cli_error(capsys, ["serve", "--api-key-env", UNSET_ENV])
    assert msg == f"${UNSET_ENV} is not set (it should hold the API key clients must send)"


def test_cli_refuses_pickle_adapter_before_loading(capsys, tmp_path, no_model_loads):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"not really")
    msg = cli_error(capsys, ["serve", "--adapter", str(tmp_path)])
    assert msg.startswith(f"{tmp_path}: adapter weights only in pickle format (adapter_model.bin)")


def test_cli_serve_starts_and_never_shows_the_key(capsys, tmp_path, monkeypatch):
    import adaptlab.lm.local
    from adaptlab.serve import OpenAIServer

    key = f"sk-{uuid.uuid4().hex}"
    monkeypatch.setenv(DEFAULT_KEY_ENV, key)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", lambda *a, **k: FakeLM())

    def interrupted(self, *a, **k):
        assert isinstance(self.lm, FakeLM) and self.needs_key
        raise KeyboardInterrupt
    monkeypatch.setattr(OpenAIServer, "serve_forever", interrupted)
    rc = cli.main(["serve", "--model", str(model), "--host", "0.0.0.0", "--port", "0"])
    out, err = capsys.readouterr()
    assert rc == 0 and "serving" in err and "API key required" in err
    assert key not in out + err


# -- the real student, end to end -----------------------------------------------------------

@pytest.mark.slow
def test_serves_the_packaged_student():
    from adaptlab.lm.local import LocalLM

    lm = LocalLM("smollm2-135m-instruct", batch_size=1)
    chat = [{"role": "user", "content": "Name a colour."}]
    p = GenParams(max_new_tokens=8, temperature=0.0)
    direct = lm.chat([chat], p)[0]
    with served(lm) as server:
        client = openai_lm(server)
        assert client.chat([chat], p) == [direct]
        status, body, _ = request(server, "POST", "/v1/chat/completions",
                                  {"messages": chat, "max_tokens": 8, "temperature": 0})
    assert status == 200 and body["choices"][0]["message"]["content"] == direct
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 0 < usage["completion_tokens"] <= 8
