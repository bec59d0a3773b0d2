"""`adaptlab serve` over the real packaged student, with a LoRA adapter trained in the test (two
steps at a high learning rate, so that its answers move), loaded at run time and answered under
its own name, concurrently with the base."""
from __future__ import annotations

import threading

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
openai = pytest.importorskip("openai")

from adaptlab.lm.base import GenParams, adapter_name  # noqa: E402
from adaptlab.models.registry import PACKAGED, source_files  # noqa: E402
from serving import request, served  # noqa: E402

MODEL = "smollm2-135m-instruct"
if source_files(PACKAGED[MODEL]) is None:
    pytest.skip(f"{MODEL} not installed ({PACKAGED[MODEL].install})", allow_module_level=True)

QUESTIONS = ["Name a colour.", "Say hi."]
TRAIN = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "Banana banana."}]}
         for q in ("What is 2 + 2?", "Name a fruit.", "Say hello.", "Which animal barks?",
                   "What do bees make?", "What is ice?", "How are you?", "Name a city.")]


def test_serves_the_student_and_a_fresh_adapter_under_its_name(tmp_path):
    from adaptlab.lm.local import LocalLM
    from adaptlab.train import TuneConfig
    from adaptlab.train.lora import tune

    out = tmp_path / "banana"
    tune(TuneConfig(max_steps=2, save_every=0, lr=3e-2, warmup_steps=0, lora_dropout=0.0), TRAIN, out)
    lm = LocalLM(MODEL, batch_size=4)
    chats = [[{"role": "user", "content": q}] for q in QUESTIONS]
    p = GenParams(max_new_tokens=8)
    base = lm.chat(chats, p)
    lm.set_adapter(str(out))
    tuned = lm.chat(chats, p)
    lm.set_adapter(None)
    assert tuned != base, "two steps at lr 3e-2 did not move the greedy answers"

    with served(lm, name=MODEL) as server:
        status, card, _ = request(server, "POST", "/v1/adapters", {"name": "banana", "path": str(out)})
        assert status == 200 and card["id"] == "banana"
        assert lm.name == adapter_name(lm.base_name, str(out))  # loaded (and checked) at once
        c = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
        asks = [(m, i) for i in range(len(QUESTIONS)) for m in (MODEL, "banana")]
        got: dict = {}

        def ask(model, i):
            r = c.chat.completions.create(model=model, messages=chats[i], temperature=0,
                                          max_completion_tokens=8)
            got[model, i] = (r.model, r.choices[0].message.content, r.usage)
        threads = [threading.Thread(target=ask, args=a) for a in asks]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        calls = server.batcher.calls
        stream = c.chat.completions.create(model="banana", messages=chats[0], temperature=0,
                                           max_completion_tokens=8, stream=True)
        streamed = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert [m.id for m in c.models.list()] == [MODEL, "banana"]
        assert request(server, "DELETE", "/v1/adapters/banana")[0] == 200
        assert lm.name == lm.base_name

    for (model, i), (served_as, text, usage) in got.items():
        assert served_as == model
        assert text == (base if model == MODEL else tuned)[i], (model, i)
        assert usage.prompt_tokens > 5 and 0 < usage.completion_tokens <= 8
    assert len(got) == 4 and calls < 4  # four requests at once: fewer chat calls than requests
    assert streamed == tuned[0]
