"""`adaptlab serve` through the official `openai` client: n, max_completion_tokens, streaming,
adapters loaded and unloaded at run time, and concurrent requests batched (a fake LM)."""
from __future__ import annotations

import json
import threading
import time

import pytest

from adaptlab import cli
from adaptlab.errors import AdaptlabError
from adaptlab.lm.base import GenParams, adapter_name
from adaptlab.lm.fake import FakeLM
from adaptlab.serve import DEFAULT_KEY_ENV, BadRequest, make_server
from adaptlab.serve.protocol import batch_key, derive_seed, pieces
from serving import adapter_dir, params_echo, request, served

openai = pytest.importorskip("openai")

HELLO = [{"role": "user", "content": "hello there"}]


@pytest.fixture(autouse=True)
def no_default_key(monkeypatch):
    monkeypatch.delenv(DEFAULT_KEY_ENV, raising=False)


def client(server) -> "openai.OpenAI":
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=10)


def named_lm() -> FakeLM:
    """Replies name the LM as it was when it answered (its name follows the adapter in it)."""
    lm = FakeLM()
    lm.reply = lambda chat, p: f"{lm.name} | {chat[-1]['content']}"
    return lm


# -- chat completions -----------------------------------------------------------------------

def test_max_completion_tokens_seed_stop_and_unknown_fields():
    with served() as server:
        c = client(server)
        r = c.chat.completions.create(model="fake-model", messages=HELLO, max_completion_tokens=7,
                                      temperature=0, seed=3, stop=["there"],
                                      extra_body={"frobnicate": True, "logit_bias": {"1": 2},
                                                  "response_format": {"type": "text"}})
        assert r.choices[0].message.content == "max=7 t=0.0 top_p=1.0 seed=3 | hello "
        assert r.model == "fake-model" and r.object == "chat.completion"
        r = c.chat.completions.create(model="fake-model", messages=HELLO, max_tokens=5)
        assert r.choices[0].message.content.startswith("max=5 t=1.0 ")
        # both given: max_completion_tokens (the newer name) wins
        r = c.chat.completions.create(model="fake-model", messages=HELLO, max_tokens=5,
                                      max_completion_tokens=6)
        assert r.choices[0].message.content.startswith("max=6 ")


def test_n_greedy_choices_are_one_generation():
    lm = FakeLM(params_echo)
    with served(lm) as server:
        r = client(server).chat.completions.create(model="fake-model", messages=HELLO, n=3,
                                                   temperature=0, max_tokens=4)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert len({c.message.content for c in r.choices}) == 1
    assert lm.chats_seen == 1
    words = len(r.choices[0].message.content.split())
    # each choice counts its words, capped at the budget (max_tokens=4)
    assert r.usage.prompt_tokens == 2 and r.usage.completion_tokens == 3 * min(words, 4)


def test_n_sampled_choices_have_distinct_derived_seeds():
    lm = FakeLM(params_echo)
    with served(lm) as server:
        c = client(server)
        first = c.chat.completions.create(model="fake-model", messages=HELLO, n=4,
                                          temperature=0.7, seed=5)
        again = c.chat.completions.create(model="fake-model", messages=HELLO, n=4,
                                          temperature=0.7, seed=5)
    seeds = [int(ch.message.content.split("seed=")[1].split()[0]) for ch in first.choices]
    assert seeds == [5] + [derive_seed(5, i) for i in (1, 2, 3)] and len(set(seeds)) == 4
    assert [ch.message.content for ch in again.choices] == [ch.message.content for ch in first.choices]


def test_derived_seeds_fit_and_do_not_collide_across_nearby_seeds():
    seeds = {derive_seed(s, i) for s in range(50) for i in range(1, 16)}
    assert len(seeds) == 50 * 15 and all(0 <= s < 2**31 for s in seeds)


def test_stream_matches_the_plain_answer():
    with served() as server:
        c = client(server)
        kw = dict(model="fake-model", messages=HELLO, n=2, temperature=0.5, seed=1, max_tokens=50)
        plain = c.chat.completions.create(**kw)
        chunks = list(c.chat.completions.create(stream=True, stream_options={"include_usage": True},
                                                **kw))
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    texts, finish, roles = ["", ""], [None, None], []
    for ch in chunks[:-1]:
        (choice,) = ch.choices
        texts[choice.index] += choice.delta.content or ""
        finish[choice.index] = choice.finish_reason or finish[choice.index]
        roles += [choice.delta.role] if choice.delta.role else []
    assert texts == [ch.message.content for ch in plain.choices]
    assert finish == ["stop", "stop"] and roles == ["assistant", "assistant"]
    assert len(chunks) > 6  # the text comes in several pieces, not one
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump() == plain.usage.model_dump()


def test_stream_wire_format():
    body = {"model": "fake-model", "messages": HELLO, "stream": True, "temperature": 0}
    with served() as server:
        status, text, headers = request(server, "POST", "/v1/chat/completions", body, text=True)
    assert status == 200 and headers["Content-Type"].startswith("text/event-stream")
    events = text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(e.startswith("data: ") for e in events[:-1])
    first = json.loads(events[0][len("data: "):])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    last = json.loads(events[-3][len("data: "):])
    assert last["choices"][0]["delta"] == {} and last["choices"][0]["finish_reason"] == "stop"


def test_pieces_join_to_the_text():
    for text in ["", "one", " two  words \n", "a\n\nb "]:
        assert "".join(pieces(text)) == text
    assert len(pieces("three short words")) == 3


def test_unknown_model_is_404_in_openai_shape():
    with served() as server:
        with pytest.raises(openai.NotFoundError) as e:
            client(server).chat.completions.create(model="gpt-4o", messages=HELLO)
        status, body, _ = request(server, "POST", "/v1/chat/completions",
                                  {"model": "nope", "messages": HELLO})
    assert e.value.status_code == 404
    assert status == 404 and body["error"]["code"] == "model_not_found"
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["param"] == "model"


def test_missing_model_field_means_the_base():
    with served() as server:
        status, body, _ = request(server, "POST", "/v1/chat/completions", {"messages": HELLO})
    assert status == 200 and body["model"] == "fake-model"


# -- adapters -------------------------------------------------------------------------------

def test_adapters_load_answer_under_their_names_and_unload(tmp_path):
    lm = named_lm()
    tone, terse = adapter_dir(tmp_path, "tone"), adapter_dir(tmp_path, "terse")
    with served(lm) as server:
        c = client(server)
        for name, d in (("tone-v1", tone), ("terse", terse)):
            status, card, _ = request(server, "POST", "/v1/adapters", {"name": name, "path": str(d)})
            assert status == 200 and card["id"] == name and card["parent"] == "fake-model"
        assert [m.id for m in c.models.list()] == ["fake-model", "tone-v1", "terse"]
        assert c.models.retrieve("tone-v1").id == "tone-v1"

        def ask(model):
            r = c.chat.completions.create(model=model, messages=HELLO, temperature=0)
            assert r.model == model
            return r.choices[0].message.content

        assert ask("tone-v1") == f"{adapter_name('fake', str(tone.resolve()))} | hello there"
        assert ask("terse") == f"{adapter_name('fake', str(terse.resolve()))} | hello there"
        assert ask("fake-model") == "fake | hello there" and lm.adapter is None
        assert ask("tone-v1") != ask("terse")

        assert request(server, "DELETE", "/v1/adapters/tone-v1")[:2] == (
            200, {"id": "tone-v1", "object": "model", "deleted": True})
        assert [m.id for m in c.models.list()] == ["fake-model", "terse"]
        with pytest.raises(openai.NotFoundError):
            c.chat.completions.create(model="tone-v1", messages=HELLO)
        ask("terse")
        request(server, "DELETE", "/v1/adapters/terse")
        assert lm.adapter is None and lm.name == "fake"  # the adapter in use left the model


def test_adapter_python_api(tmp_path):
    lm = named_lm()
    with served(lm) as server:
        card = server.add_adapter("a1", str(adapter_dir(tmp_path, "a1")))
        assert card["id"] == "a1" and lm.adapter is not None  # loaded at once, so it is checked
        assert [m["id"] for m in server.models()["data"]] == ["fake-model", "a1"]
        server.remove_adapter("a1")
        assert server.adapters == {} and lm.adapter is None
        with pytest.raises(AdaptlabError, match="does not exist"):
            server.remove_adapter("a1")


@pytest.mark.parametrize("make, status, fragment", [
    (lambda d: {"name": "x", "path": str(d / "missing")}, 400, "not an adapter directory"),
    (lambda d: {"name": "x", "path": str(adapter_dir(d, "p") / "adapter_model.safetensors")}, 400,
     "not an adapter directory"),
    (lambda d: {"name": "x", "path": str(pickle_only(d))}, 400, "pickle format"),
    (lambda d: {"name": "x", "path": str(no_weights(d))}, 400, "no adapter weights"),
    (lambda d: {"name": "has/slash", "path": str(adapter_dir(d, "s"))}, 400, "name: expected"),
    (lambda d: {"name": "", "path": str(adapter_dir(d, "s"))}, 400, "name: expected"),
    (lambda d: {"name": "x"}, 400, "path: expected"),
    (lambda d: {"name": "fake-model", "path": str(adapter_dir(d, "s"))}, 409, "already served"),
    (lambda d: ["not", "an", "object"], 400, "expected a JSON object"),
])
def test_bad_adapters_are_refused(tmp_path, make, status, fragment):
    lm = named_lm()
    with served(lm) as server:
        got, body, _ = request(server, "POST", "/v1/adapters", make(tmp_path))
        assert request(server, "GET", "/v1/models")[1]["data"][1:] == []
    assert got == status and fragment in body["error"]["message"], body
    assert lm.adapter is None


def pickle_only(d):
    p = d / "pickled"
    p.mkdir()
    (p / "adapter_config.json").write_text("{}")
    (p / "adapter_model.bin").write_bytes(b"pickle")
    return p


def no_weights(d):
    p = d / "empty"
    p.mkdir()
    (p / "adapter_config.json").write_text("{}")
    return p


def test_adapter_name_conflicts_and_unknown_deletes(tmp_path):
    with served(named_lm()) as server:
        d = str(adapter_dir(tmp_path, "a"))
        assert request(server, "POST", "/v1/adapters", {"name": "a", "path": d})[0] == 200
        status, body, _ = request(server, "POST", "/v1/adapters", {"name": "a", "path": d})
        assert status == 409 and body["error"]["type"] == "conflict_error"
        assert request(server, "DELETE", "/v1/adapters/nope")[0] == 404
        assert request(server, "DELETE", "/v1/adapters/fake-model")[0] == 400
        assert request(server, "GET", "/v1/models/nope")[0] == 404
        assert request(server, "GET", "/v1/adapters")[0] == 405


def test_a_failing_adapter_load_is_refused_and_the_model_stays_usable(tmp_path):
    lm = named_lm()
    real = lm.set_adapter

    def picky(path):
        if path and "bad" in path:
            raise ValueError("size mismatch for lora_A: secret detail")
        real(path)
    lm.set_adapter = picky
    with served(lm) as server:
        status, body, _ = request(server, "POST", "/v1/adapters",
                                  {"name": "bad", "path": str(adapter_dir(tmp_path, "bad"))})
        assert status == 400 and "ValueError" in body["error"]["message"]
        assert "secret detail" not in body["error"]["message"]
        assert [m["id"] for m in server.models()["data"]] == ["fake-model"]
        r = request(server, "POST", "/v1/chat/completions", {"messages": HELLO})
    assert r[0] == 200 and r[1]["choices"][0]["message"]["content"] == "fake | hello there"


def test_models_without_adapter_support_refuse_adapters(tmp_path):
    class Plain:
        name = "plain"

        def chat(self, chats, params):
            return ["ok" for _ in chats]

    with served(Plain()) as server:
        status, body, _ = request(server, "POST", "/v1/adapters",
                                  {"name": "a", "path": str(adapter_dir(tmp_path, "a"))})
        assert status == 400 and "cannot swap adapters" in body["error"]["message"]
        assert request(server, "POST", "/v1/chat/completions", {"messages": HELLO})[0] == 200


def test_a_model_built_with_an_adapter_in_it_refuses_swaps(tmp_path):
    lm = named_lm()
    lm.set_adapter(str(adapter_dir(tmp_path, "built-in")))  # as api.serve(adapter=...) builds it
    with served(lm) as server:
        status, _, _ = request(server, "POST", "/v1/adapters",
                               {"name": "a", "path": str(adapter_dir(tmp_path, "a"))})
    assert status == 409 and lm.adapter.endswith("built-in")


def test_adapter_endpoints_keep_the_guards(tmp_path):
    d = str(adapter_dir(tmp_path, "a"))
    with served(named_lm()) as server:
        assert request(server, "POST", "/v1/adapters", {"name": "a", "path": d},
                       headers={"Host": "evil.example"})[0] == 403
        assert request(server, "POST", "/v1/adapters", {"name": "a", "path": d},
                       headers={"Content-Type": "text/plain"})[0] == 415
        assert server.adapters == {}
    with served(named_lm(), api_key="k") as server:
        assert request(server, "POST", "/v1/adapters", {"name": "a", "path": d})[0] == 401
        ok = {"Authorization": "Bearer k"}
        assert request(server, "POST", "/v1/adapters", {"name": "a", "path": d}, headers=ok)[0] == 200
        assert request(server, "DELETE", "/v1/adapters/a")[0] == 401
        assert request(server, "DELETE", "/v1/adapters/a", headers={"Host": "x.example"})[0] == 401
        assert server.adapters != {}
        assert request(server, "DELETE", "/v1/adapters/a", headers=ok)[0] == 200


# -- batching -------------------------------------------------------------------------------

class Gate:
    """A reply that holds the first `chat` call until released, so that requests pile up."""

    def __init__(self, lm):
        self.lm, self.started, self.release = lm, threading.Event(), threading.Event()
        self.batches: list[list[str]] = []

    def __call__(self, chat, p):
        self.started.set()
        self.release.wait(10)
        return f"{self.lm.name} | {p.max_new_tokens} | {chat[-1]['content']}"


def gated(lm=None):
    lm = lm or FakeLM()
    gate = Gate(lm)
    lm.reply = gate
    return lm, gate


def wait_for(cond, timeout=10.0):
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.01)


def ask_in_threads(server, bodies):
    results: dict[int, tuple] = {}

    def one(i, body):
        results[i] = request(server, "POST", "/v1/chat/completions", body)[:2]
    threads = [threading.Thread(target=one, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    return threads, results


def waiting(server) -> int:
    return len(server.batcher._jobs)


def test_requests_waiting_together_share_one_chat_call():
    lm, gate = gated()
    def body(i):  # greedy: the different seeds do not keep them apart
        return {"messages": [{"role": "user", "content": f"q{i}"}], "temperature": 0,
                "max_tokens": 5, "seed": i}
    with served(lm) as server:
        first, res0 = ask_in_threads(server, [body(0)])
        gate.started.wait(10)
        threads, results = ask_in_threads(server, [body(i) for i in range(1, 8)])
        wait_for(lambda: waiting(server) == 7)
        gate.release.set()
        for t in first + threads:
            t.join(10)
    answers = [res0[0]] + [results[i] for i in range(7)]
    for i, (status, b) in enumerate(answers):
        assert status == 200 and b["choices"][0]["message"]["content"] == f"fake | 5 | q{i}"
    assert lm.calls == 2 and [len(chats) for _, chats in lm.log] == [1, 7]
    assert server.batcher.calls == 2


def test_requests_sent_a_moment_apart_are_gathered_into_one_call():
    # a client's threads never send at the same instant: the server waits a moment (GATHER_S)
    # for the rest of the batch rather than running the first request alone
    lm = FakeLM()
    def body(i):
        return {"messages": [{"role": "user", "content": f"q{i}"}], "temperature": 0,
                "max_tokens": 5}
    with served(lm) as server:
        threads = []
        for i in range(4):
            t, _ = ask_in_threads(server, [body(i)])
            threads += t
            time.sleep(0.005)
        for t in threads:
            t.join(10)
    assert [len(chats) for _, chats in lm.log] == [4]


def test_batches_are_per_model_and_parameters(tmp_path):
    lm, gate = gated()
    with served(lm) as server:
        server.add_adapter("tuned", str(adapter_dir(tmp_path, "tuned")))
        tuned = adapter_name("fake", str((tmp_path / "tuned").resolve()))
        first, _ = ask_in_threads(server, [{"messages": HELLO, "temperature": 0}])
        gate.started.wait(10)
        bodies = [{"model": m, "messages": [{"role": "user", "content": f"{m} {i}"}],
                   "temperature": 0, "max_tokens": t}
                  for i, (m, t) in enumerate([("tuned", 5), ("fake-model", 5), ("tuned", 5),
                                              ("fake-model", 9), ("tuned", 5), ("fake-model", 5)])]
        threads, results = ask_in_threads(server, bodies)
        wait_for(lambda: waiting(server) == 6)
        gate.release.set()
        for t in first + threads:
            t.join(10)
    for i, b in enumerate(bodies):
        status, r = results[i]
        name = tuned if b["model"] == "tuned" else "fake"
        want = f"{name} | {b['max_tokens']} | {b['model']} {i}"
        assert status == 200 and r["choices"][0]["message"]["content"] == want
        assert r["model"] == b["model"]
    # the held call, then one call per (model, parameters) group, whatever order they came in
    group = {b["messages"][0]["content"]: (b["model"], b["max_tokens"]) for b in bodies}
    calls = [{group[c[-1]["content"]] for c in chats} for _, chats in lm.log[1:]]
    sizes = {next(iter(g)): len(chats) for g, (_, chats) in zip(calls, lm.log[1:])}
    assert all(len(g) == 1 for g in calls) and len(calls) == 3
    assert sizes == {("tuned", 5): 3, ("fake-model", 5): 2, ("fake-model", 9): 1}


def test_one_failing_request_does_not_fail_its_batch():
    lm, gate = gated()
    inner = lm.reply

    def reply(chat, p):
        if chat[-1]["content"] == "boom":
            raise RuntimeError("bad row")
        return inner(chat, p)
    lm.reply = reply
    with served(lm) as server:
        first, _ = ask_in_threads(server, [{"messages": HELLO, "temperature": 0}])
        gate.started.wait(10)
        bodies = [{"messages": [{"role": "user", "content": c}], "temperature": 0}
                  for c in ("a", "boom", "b")]
        threads, results = ask_in_threads(server, bodies)
        wait_for(lambda: waiting(server) == 3)
        gate.release.set()
        for t in first + threads:
            t.join(10)
    assert [results[i][0] for i in range(3)] == [200, 500, 200]
    assert results[2][1]["choices"][0]["message"]["content"].endswith("| b")


def test_sampled_requests_with_other_seeds_are_not_batched_together():
    p = GenParams(temperature=0.8, seed=1)
    assert batch_key("m", p) != batch_key("m", GenParams(temperature=0.8, seed=2))
    assert batch_key("m", GenParams(seed=1)) == batch_key("m", GenParams(seed=2, top_p=0.5))
    assert batch_key("m", p) != batch_key("other", p)


def test_too_many_waiting_is_429():
    lm, gate = gated()
    with served(lm) as server:
        server.batcher.max_waiting = 2
        first, _ = ask_in_threads(server, [{"messages": HELLO}])
        gate.started.wait(10)
        status, body, _ = request(server, "POST", "/v1/chat/completions",
                                  {"messages": HELLO, "n": 3, "temperature": 1})
        gate.release.set()
        first[0].join(10)
    assert status == 429 and body["error"]["type"] == "rate_limit_error"


def test_closing_fails_waiting_requests_and_lets_the_running_one_finish():
    from adaptlab.serve.server import _Row

    lm, gate = gated()
    server = make_server(lm, "fake", port=0)
    row = _Row("fake", HELLO, GenParams())
    (running,) = server.batcher.submit([(batch_key("fake", row.params), row)])
    gate.started.wait(10)
    (queued,) = server.batcher.submit([("another key", row)])
    closer = threading.Thread(target=server.server_close)
    closer.start()
    with pytest.raises(BadRequest, match="shutting down"):
        queued.result(5)
    gate.release.set()
    closer.join(10)
    assert running.result(5).text == "fake | 128 | hello there"
    with pytest.raises(BadRequest, match="shutting down"):
        server.batcher.submit([("k", row)])


# -- the command line -----------------------------------------------------------------------

def test_cli_serves_adapters_by_name(tmp_path, monkeypatch, capsys):
    import adaptlab.lm.local
    from adaptlab.serve import OpenAIServer

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"")
    built = {}

    def fake_local(ref, **kw):
        built.update(kw)
        return named_lm()
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", fake_local)
    seen = {}

    def interrupted(self, *a, **k):
        seen["models"] = [m["id"] for m in self.models()["data"]]
        raise KeyboardInterrupt
    monkeypatch.setattr(OpenAIServer, "serve_forever", interrupted)
    one, two = adapter_dir(tmp_path, "one"), adapter_dir(tmp_path, "two")
    rc = cli.main(["serve", "--model", str(model), "--port", "0", "--adapter", f"tuned={one}",
                   "--adapter", str(two), "--batch-size", "4"])
    assert rc == 0, capsys.readouterr().err
    assert seen["models"] == [str(model), "tuned", "two"]
    assert built == {"precision": "fp32", "batch_size": 4}


def test_cli_refuses_duplicate_adapter_names(tmp_path, capsys):
    d = adapter_dir(tmp_path, "x")
    rc = cli.main(["serve", "--adapter", f"a={d}", "--adapter", f"a={d}"])
    err = capsys.readouterr().err
    assert rc != 0 and "two adapters named 'a'" in err
