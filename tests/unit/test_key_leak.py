"""The API key never leaks: not into the run directory, the cache, logs, output or error messages.

The tone study runs end to end through the CLI with its teacher and LLM judge on a local fault
server, the key in an environment variable holding a unique sentinel. Only what needs real models
is faked (embeddings, the local student, LoRA training). Runs that fail on 401, on a 400 whose body
quotes part of the key, and on exhausted retries come first, then a run through random faults
that finishes. Every byte written, printed or logged is then searched for the sentinel and for
its first 8 characters.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import pickle
import secrets
import traceback

import pytest
from faultserver import FaultServer, last_user

pytest.importorskip("openai")
pytest.importorskip("sklearn")

from adaptlab.errors import AdaptlabError  # noqa: E402
from adaptlab.lm.fake import FakeLM  # noqa: E402

KEY_ENV = "ADAPTLAB_LEAK_TEST_KEY"
# first 8 characters outside the hex alphabet: they cannot turn up by chance in a hash
SENTINEL = "".join(secrets.choice("ghijkmnpqrstuvwxyz") for _ in range(8)) + secrets.token_hex(20)
NEEDLES = (SENTINEL, SENTINEL[:8])


def leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [n for n in NEEDLES if n.encode() in data]


def answer(body: dict) -> str:
    """Judge prompts get Yes/No, teacher prompts a spoken answer naming their question."""
    q = last_user(body)
    if body["messages"][0]["content"].startswith("You are a careful judge"):
        return "Yes" if hashlib.sha256(q.encode()).digest()[0] % 2 else "No"
    return f"Well, you know, here's the thing. {q.splitlines()[0][:80]} That's all there is to it!"


# -- fakes for what needs real models -------------------------------------------------------------
from tone_fakes import fake_embed  # noqa: E402  (hashed bags of words)


class FakeModel:
    def unload(self):
        return self


class FakeLocalLM(FakeLM):
    def __init__(self, model_ref, precision="fp32", batch_size=8, model=None, tokenizer=None,
                 name=None):
        super().__init__(lambda chat, p: f"Sure, you'll see. {chat[-1]['content'][:60]}.",
                         name=name or f"local:{model_ref}")
        self.model, self.tok = model or FakeModel(), tokenizer


def fake_tune(cfg, examples, d, source="data", eval_hook=None, **kw):
    d.mkdir(parents=True, exist_ok=True)
    (d / "adapter_model.safetensors").write_bytes(b"fake adapter " + cfg.precision.encode())
    (d / "loss.csv").write_text("step,loss\n1,2.0\n2,1.5\n")
    (d / "eval.csv").write_text("step,tone_rate\n2,0.5\n")
    return {"steps": 2, "final_loss": 1.5}


@pytest.fixture
def pipeline(tmp_path, monkeypatch):
    import adaptlab.evaluate.embed
    import adaptlab.lm.local
    import adaptlab.lm.openai_http
    import adaptlab.models.load
    import adaptlab.train.lora

    monkeypatch.setenv(KEY_ENV, SENTINEL)
    monkeypatch.setenv("ADAPTLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setattr(adaptlab.evaluate.embed, "embed", fake_embed)
    monkeypatch.setattr(adaptlab.lm.local, "LocalLM", FakeLocalLM)
    monkeypatch.setattr(adaptlab.models.load, "attach_adapter", lambda model, *a, **k: FakeModel())
    monkeypatch.setattr(adaptlab.train.lora, "tune", fake_tune)
    monkeypatch.setattr(adaptlab.lm.openai_http, "MAX_BACKOFF_S", 0.005)  # fast retries
    with FaultServer(answer=answer, slow_s=0.2) as server:
        server.echo_key = True  # error bodies quote part of the key, as real servers do
        openai = (f"{{backend: openai, model: m, base_url: '{server.url}', "
                  f"api_key_env: {KEY_ENV}, batch_size: 4}}")
        recipe = tmp_path / "leak.yaml"
        recipe.write_text(
            "study: tone\nname: leak\n"
            f"teacher: {openai}\njudge: {openai}\njudge_calibration_limit: 10\n"
            "split: {eval_questions: 3, val_questions: 2, train_questions: 10}\n"
            "train_sizes: [4]\nmain_size: 4\ncurve_every: 0\nmax_new_tokens: 16\n"
            "filters: {min_topic_sim: 0.0, min_tone: 0.0}\n")
        yield server, recipe


def test_api_key_never_leaks(pipeline, tmp_path, capfd, caplog, request):
    from adaptlab.api import run
    from adaptlab.cli import main

    server, recipe = pipeline
    caplog.set_level(logging.DEBUG)  # openai, httpx and adaptlab records, down to DEBUG
    mpl = logging.getLogger("matplotlib")  # its DEBUG font lookups are noise
    request.addfinalizer(functools.partial(mpl.setLevel, mpl.level))
    mpl.setLevel(logging.WARNING)
    server.down = True
    codes, errors = [], []
    for status in (401, 400, 503):  # refused key; a refusal quoting the key; retries exhausted
        server.down_status = status
        codes.append(main(["run", str(recipe)]))
        with pytest.raises(AdaptlabError) as ei:  # the same failure, as a library call
            run(recipe)
        errors.append(ei.value)
    server.down = False
    server.fault_rate = 0.3  # random faults of every kind on the way to a finished run
    assert main(["run", str(recipe)]) == 0
    assert main(["runs"]) == 0
    out, err = capfd.readouterr()

    assert codes == [2, 2, 2]
    assert "HTTP 401" in err and "HTTP 400" in err and "failed after 6 attempts" in err
    assert '"report":' in out and "leak" in out
    auths = {r["auth"] for r in server.requests}
    assert auths == {f"Bearer {SENTINEL}"}  # the key was really used
    assert sum(server.faults.values()) > len(server.faults) > 3

    found = {}
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"cache.sqlite", "index.sqlite", "journal.jsonl", "manifest.json", "report.html",
            "recipe.resolved.json"} <= names
    for p in files:
        found[str(p.relative_to(tmp_path))] = leaks(p.read_bytes())
    found["stdout"], found["stderr"] = leaks(out), leaks(err)
    for rec in caplog.records:
        text = rec.getMessage() + (logging.Formatter().formatException(rec.exc_info)
                                   if rec.exc_info else "")
        found[f"log {rec.name}:{rec.lineno}"] = leaks(text)
    for i, e in enumerate(errors):
        found[f"error {i}"] = leaks(str(e) + repr(e) + "".join(traceback.format_exception(e)))
    assert any(r.name.startswith(("openai", "httpx")) for r in caplog.records)
    assert {k: v for k, v in found.items() if v} == {}
    print(f"scanned {len(files)} files, {len(caplog.records)} log records, "
          f"{len(out) + len(err)} chars of output, {len(errors)} errors: no leak")


def test_config_and_backend_reprs_hold_no_key(pipeline, tmp_path):
    from adaptlab.api import run  # noqa: F401  (registers the studies)
    from adaptlab.config import from_dict, load_yaml, to_dict
    from adaptlab.lm.registry import make_lm
    from adaptlab.studies.tone import Config

    _, recipe = pipeline
    data = load_yaml(recipe)
    data.pop("study")
    cfg = from_dict(Config, data)
    lm = make_lm(cfg.teacher, tmp_path / "c.sqlite")
    texts = [repr(cfg), str(cfg), repr(cfg.teacher), json.dumps(to_dict(cfg)), repr(lm), str(lm),
             repr(vars(lm.inner) | {"_client": None})]
    assert [t for t in texts if leaks(t)] == []
    assert not leaks(pickle.dumps(lm.inner))


def test_a_key_pasted_where_its_variable_name_belongs_is_refused_unshown(pipeline):
    from adaptlab.api import run
    from adaptlab.cli import main

    _, recipe = pipeline
    for override in (f"teacher.api_key_env=sk-{SENTINEL}", f"teacher.api_key={SENTINEL}"):
        with pytest.raises(AdaptlabError) as ei:
            run(recipe, [override])
        assert not leaks(str(ei.value)), str(ei.value)
    assert main(["run", str(recipe), f"teacher.api_key_env=sk-{SENTINEL}"]) == 2
