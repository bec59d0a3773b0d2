"""Integration tests on the real packaged student, smollm2-135m-instruct, on CPU.

The base model loads once per session; each training scenario trains once per module and the
tests that look at its output share it. Everything is small: 8 short chats, 1-6 LoRA steps.
"""
from __future__ import annotations

import csv
import importlib.util
import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from adaptlab.models.registry import PACKAGED, source_files  # noqa: E402
from train_chats import PAIRS, examples  # noqa: E402

MODEL = "smollm2-135m-instruct"
if source_files(PACKAGED[MODEL]) is None:
    pytest.skip(f"{MODEL} not installed ({PACKAGED[MODEL].install})", allow_module_level=True)

EXAMPLES = examples(8)
CHATS = [[{"role": "user", "content": q}] for q in
         ("Say hi.", "What is 3 + 5?", "Name a colour.", "Write one short sentence about dogs.")]
LORA_OUT_FILES = ("adapter_model.safetensors", "adapter_config.json", "loss.csv",
                  "train_summary.json")


# -- helpers -------------------------------------------------------------------------------------
def _fresh_base():
    from adaptlab.models.load import load_model

    return load_model(MODEL)[0]


def _probe_ids(tok):
    from adaptlab.models.chat import render_ids

    chat = [{"role": "user", "content": "What do bees make?"},
            {"role": "assistant", "content": "Bees make honey."}]
    return torch.tensor([render_ids(tok, chat, add_generation_prompt=False)])


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


def _base_name(peft_name: str) -> str:
    """PEFT parameter name -> the bare base model's name for the same tensor."""
    name = peft_name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


def _loss_rows(path: Path) -> list[dict]:
    """loss.csv rows without the wall-clock column (the one thing that may differ across runs)."""
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def lm():
    from adaptlab.lm.local import LocalLM

    return LocalLM(MODEL, batch_size=4)


@pytest.fixture(scope="session")
def base_state(lm):
    """The untouched base weights (the session LocalLM never gets an adapter attached)."""
    return {k: v.detach().clone() for k, v in lm.model.state_dict().items()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lm):
    """Four LoRA steps through train.lora.tune; the eval hook captures the model in memory."""
    from adaptlab.train import TuneConfig
    from adaptlab.train.lora import tune

    out = tmp_path_factory.mktemp("lora4")
    probe = _probe_ids(lm.tok)
    seen: dict = {}

    def hook(step, model, tok):
        seen["step"], seen["model"] = step, model
        seen["logits"] = _logits(model, probe)  # tune() put the model in eval mode for us
        seen["lora"] = {k: v.detach().clone() for k, v in
                        peft.get_peft_model_state_dict(model).items()}
        return {}

    cfg = TuneConfig(max_steps=4, save_every=0, lora_dropout=0.0, eval_every=4)
    summary = tune(cfg, EXAMPLES, out, eval_hook=hook)
    assert seen.get("step") == 4, "the eval hook did not run at the last step"
    return {"out": out, "summary": summary, "probe": probe, **seen}


@pytest.fixture(scope="module")
def reloaded(trained):
    return peft.PeftModel.from_pretrained(_fresh_base(), str(trained["out"])).eval()


# -- 1. load + generate + score ------------------------------------------------------------------
def test_generate_greedy_batched_equals_unbatched_and_seeded_sampling(lm):
    from adaptlab.lm.base import GenParams
    from adaptlab.lm.local import LocalLM

    greedy = GenParams(max_new_tokens=16)
    batched = lm.chat(CHATS, greedy)
    assert len(batched) == len(CHATS)
    assert all(isinstance(t, str) and t.strip() for t in batched), batched

    one_by_one = LocalLM(MODEL, model=lm.model, tokenizer=lm.tok, batch_size=1)
    assert one_by_one.chat(CHATS, greedy) == batched

    sampled = GenParams(max_new_tokens=16, temperature=0.8, seed=123)
    first = lm.chat(CHATS, sampled)
    assert first == lm.chat(CHATS, sampled)
    assert all(t.strip() for t in first), first


def test_score_prefers_correct_answer(lm):
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    right, wrong = lm.score([chat, chat], ["Paris", "Banana"])
    assert all(math.isfinite(x) and x < 0 for x in (right, wrong))
    assert right > wrong, (right, wrong)
    # batching (right padding) does not change a score
    assert lm.score([chat], ["Paris"])[0] == pytest.approx(right, abs=1e-4)


# -- 2. four LoRA steps: only the LoRA weights change ----------------------------------------------
def test_tune_writes_adapter_logs_and_summary(trained):
    out = trained["out"]
    for name in LORA_OUT_FILES:
        assert (out / name).is_file(), name
    assert len(_loss_rows(out / "loss.csv")) == 4
    assert all(math.isfinite(float(r["loss"])) for r in _loss_rows(out / "loss.csv"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] == 4 and summary["config"]["max_steps"] == 4
    assert trained["summary"]["steps"] == 4
    assert not (out / "checkpoints").exists()


def test_only_lora_weights_change(trained, reloaded, base_state):
    for model in (trained["model"], reloaded):  # in memory after training, and reloaded from disk
        base_names, lora_b = set(), []
        for name, p in model.named_parameters():
            if "lora_" in name:
                if "lora_B" in name:
                    lora_b.append((name, p))
                continue
            base = _base_name(name)
            assert base in base_state, name
            assert torch.equal(p.detach(), base_state[base]), f"base weight changed: {name}"
            base_names.add(base)
        # every base parameter was compared (tied lm_head shares embed_tokens)
        assert base_names == {k for k in base_state if k != "lm_head.weight"} or \
            base_names == set(base_state)
        assert len(lora_b) == 30 * 4  # 30 layers x q/k/v/o
        zero = [n for n, p in lora_b if not bool(p.detach().abs().sum() > 0)]
        assert not zero, f"LoRA B still zero: {zero[:3]}"


# -- 3. the reloaded adapter reproduces the trained model ------------------------------------------
def test_reload_gives_same_logits(trained, reloaded, base_state):
    lora_disk = peft.get_peft_model_state_dict(reloaded)
    assert lora_disk.keys() == trained["lora"].keys()
    for k, v in trained["lora"].items():
        assert torch.equal(v, lora_disk[k]), k
    again = _logits(reloaded, trained["probe"])
    assert torch.allclose(again, trained["logits"], atol=1e-6, rtol=0)
    # ...and the adapter does something: the bare base gives different logits
    base = _fresh_base()
    assert not torch.allclose(_logits(base, trained["probe"]), trained["logits"], atol=1e-6, rtol=0)


# -- 4. kill + resume is bit-identical to an uninterrupted run -------------------------------------
def _tune_cmd(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "adaptlab.cli", "tune", "--data", str(data), "--out", str(out),
            "max_steps=6", "save_every=2", "lora_dropout=0.1", "seed=3"]


def _run_to_end(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def test_kill_and_resume_is_bit_identical(tmp_path):
    from safetensors.torch import load_file

    data = _write_jsonl(tmp_path / "train.jsonl", EXAMPLES)
    out, out2 = tmp_path / "out", tmp_path / "out2"
    cmd = _tune_cmd(data, out)
    ckpts = [out / "checkpoints" / "step-2", out / "checkpoints" / "step-4"]

    # The uninterrupted reference run goes alongside: it shares nothing with the other one.
    with open(tmp_path / "ref.log", "w+") as ref_log, open(tmp_path / "kill.log", "w+") as log:
        ref = subprocess.Popen(_tune_cmd(data, out2), cwd=tmp_path, stdout=subprocess.DEVNULL,
                               stderr=ref_log)
        try:
            proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=log)
            try:
                deadline = time.monotonic() + 240
                while not any(c.exists() for c in ckpts):
                    if proc.poll() is not None:
                        log.seek(0)
                        pytest.fail(f"tune exited ({proc.returncode}) before its first "
                                    f"checkpoint:\n{log.read()[-3000:]}")
                    assert time.monotonic() < deadline, "no checkpoint within 240 s"
                    time.sleep(0.05)
            finally:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
            assert not (out / "adapter_model.safetensors").exists(), "finished before the kill"
            assert not (out / "train_summary.json").exists()

            resumed = _run_to_end(cmd, tmp_path)
            assert "resuming" in resumed.stderr
            ref.wait(timeout=300)
        finally:
            if ref.poll() is None:
                ref.kill()
                ref.wait()
        ref_log.seek(0)
        assert ref.returncode == 0, ref_log.read()[-3000:]

    a = load_file(out / "adapter_model.safetensors")
    b = load_file(out2 / "adapter_model.safetensors")
    assert a.keys() == b.keys() and a
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{len(diff)} adapter tensors differ after resume, e.g. {diff[:3]}"
    # loss, lr and the cumulative token count match row for row (seconds is wall-clock time)
    rows_a, rows_b = _loss_rows(out / "loss.csv"), _loss_rows(out2 / "loss.csv")
    assert len(rows_a) == 6
    assert rows_a == rows_b
    assert not (out / "checkpoints").exists()


# -- 5. int8 base ----------------------------------------------------------------------------------
def _int8_weight(w) -> bool:
    """Whether a weight is stored in 8 bits: bitsandbytes' Int8Params are int8 themselves; torchao's
    Int8Tensor shows a float dtype but holds int8 `qdata` of the weight's shape."""
    if w.dtype == torch.int8:
        return True
    inner = w.__tensor_flatten__()[0] if hasattr(w, "__tensor_flatten__") else []
    return any(getattr(w, n).dtype == torch.int8 and getattr(w, n).shape == w.shape for n in inner)


def _layer_linears(model) -> dict:
    """The decoder layers' linear layers (LoRA's base layers under PEFT), by name."""
    return {n: m for n, m in model.named_modules()
            if ".layers." in n and "lora_" not in n and isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("backend", [
    pytest.param(b, marks=pytest.mark.skipif(importlib.util.find_spec(b) is None, reason=f"needs {b}"))
    for b in ("bitsandbytes", "torchao")])
def test_int8_base_holds_8bit_weights_and_lora_trains(tmp_path, monkeypatch, backend):
    from safetensors.torch import load_file

    from adaptlab.train import TuneConfig
    from adaptlab.train.lora import tune

    monkeypatch.setenv("ADAPTLAB_INT8_BACKEND", backend)  # torchao is only the fallback otherwise
    seen = {}

    def hook(step, model, tok):
        seen["linears"] = {n: (type(m).__name__, type(m.weight).__name__, _int8_weight(m.weight))
                           for n, m in _layer_linears(model).items()}
        return {}

    cfg = TuneConfig(precision="int8", max_steps=2, save_every=0, eval_every=2)
    summary = tune(cfg, EXAMPLES, tmp_path, eval_hook=hook)
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    assert len(_loss_rows(tmp_path / "loss.csv")) == 2
    linears = seen["linears"]
    assert len(linears) == 30 * 7, len(linears)  # q k v o gate up down in each of 30 layers
    assert all(int8 for _, _, int8 in linears.values()), linears
    kinds = {(mod, w) for mod, w, _ in linears.values()}
    assert kinds == ({("Linear8bitLt", "Int8Params")} if backend == "bitsandbytes"
                     else {("Linear", "Int8Tensor")}), kinds
    lora = load_file(tmp_path / "adapter_model.safetensors")  # B starts at zero: it moved
    assert any(k.endswith("lora_B.weight") and v.abs().max() > 0 for k, v in lora.items())


# -- 6 + 7. CLI end to end: tune --merge, then generate with the adapter --------------------------
@pytest.fixture(scope="module")
def cli_tuned(tmp_path_factory):
    from adaptlab import cli

    d = tmp_path_factory.mktemp("cli")
    data = _write_jsonl(d / "train.jsonl", EXAMPLES)
    out = d / "adapter"
    rc = cli.main(["tune", "--data", str(data), "--out", str(out), "--merge",
                   "max_steps=2", "save_every=0", "lora_dropout=0.0"])
    assert rc == 0
    return d, out


def test_cli_tune_then_generate(cli_tuned):
    from adaptlab import cli

    d, out = cli_tuned
    for name in LORA_OUT_FILES:
        assert (out / name).is_file(), name
    prompts = _write_jsonl(d / "prompts.jsonl", [{"messages": c} for c in CHATS[:3]])
    answers = d / "answers.jsonl"
    rc = cli.main(["generate", "--adapter", str(out), "--input", str(prompts), "--out",
                   str(answers), "max_new_tokens=8"])
    assert rc == 0
    recs = [json.loads(line) for line in answers.read_text().splitlines() if line.strip()]
    assert len(recs) == 3
    for rec, chat in zip(recs, CHATS):
        assert rec["messages"][:-1] == chat
        assert rec["messages"][-1]["role"] == "assistant"
        assert isinstance(rec["messages"][-1]["content"], str)


def test_merge_matches_peft_model(cli_tuned):
    from transformers import AutoModelForCausalLM

    from adaptlab.models.load import load_tokenizer

    _, out = cli_tuned
    merged_dir = out / "merged"
    assert (merged_dir / "config.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir), dtype=torch.float32).eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    peft_model = peft.PeftModel.from_pretrained(_fresh_base(), str(out)).eval()
    ids = _probe_ids(load_tokenizer(str(merged_dir)))
    want = _logits(peft_model, ids)
    got = _logits(merged, ids)
    # merging changes the summation order: logits of magnitude ~30 agree to ~1e-4
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-5), float((got - want).abs().max())
    # the merge really folded the adapter in: the bare base is far outside that tolerance
    with peft_model.disable_adapter():
        bare = _logits(peft_model, ids)
    assert not torch.allclose(bare, got, atol=1e-3)


# -- 6. determinism: the same seed gives the same synthetic data and the same adapter bytes --------
def test_simulation_with_sampling_is_reproducible_by_seed(lm, tmp_path):
    from adaptlab.lm.base import GenParams
    from adaptlab.synth.simulate import ToneSpec, simulate

    items = [{"id": f"q{i}", "question": q, "facts": a} for i, (q, a) in enumerate(PAIRS[:6])]

    def sim(seed: int, name: str) -> bytes:
        params = GenParams(max_new_tokens=16, temperature=0.9, top_p=0.95, seed=seed)
        simulate(items, lm, ToneSpec(), params, tmp_path / name, chunk=4)
        return (tmp_path / name).read_bytes()

    first = sim(7, "a.jsonl")
    assert sim(7, "b.jsonl") == first
    assert sim(8, "c.jsonl") != first  # the seed really drives the sampling


@pytest.mark.slow  # the default kill trials compare adapter bytes across processes too
def test_same_seed_same_adapter_bytes_across_processes(tmp_path):
    import hashlib
    import os

    data = _write_jsonl(tmp_path / "train.jsonl", EXAMPLES)
    digests = {}
    for name, seed, hashseed in (("a", 5, "1"), ("b", 5, "2"), ("c", 6, "1")):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "adaptlab.cli", "tune", "--data", str(data),
                            "--out", str(out), "max_steps=3", "save_every=0", "lora_dropout=0.1",
                            f"seed={seed}"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "PYTHONHASHSEED": hashseed})
        assert r.returncode == 0, r.stderr[-3000:]
        digests[name] = [hashlib.sha256((out / f).read_bytes()).hexdigest()
                         for f in ("adapter_model.safetensors", "adapter_config.json")]
    assert digests["a"] == digests["b"]
    assert digests["a"][0] != digests["c"][0]


def test_gradient_checkpointing_trains_the_same_adapter(tmp_path):
    """Recomputing activations changes memory, not the maths: same losses, same adapter (to fp32
    summation-order tolerance)."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from adaptlab.train import TuneConfig
    from adaptlab.train.lora import tune
    from adaptlab.train.methods import lora

    seen = []

    def spy(cfg):  # record whether the model tune() trains really recomputes activations
        model, tok = lora.build(cfg)
        seen.append(model.get_base_model().is_gradient_checkpointing)
        return model, tok

    outs = {}
    for gc in (False, True):
        cfg = TuneConfig(max_steps=2, save_every=0, lora_dropout=0.0, gradient_checkpointing=gc)
        out = tmp_path / f"gc{int(gc)}"
        tune(cfg, EXAMPLES, out, factory=replace(lora.LORA, build=spy))
        outs[gc] = (load_file(out / "adapter_model.safetensors"),
                    [float(r["loss"]) for r in _loss_rows(out / "loss.csv")])
    assert seen == [False, True]
    (a, loss_a), (b, loss_b) = outs[False], outs[True]
    assert loss_a == pytest.approx(loss_b, abs=1e-4)
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert any(not torch.equal(a[k], torch.zeros_like(a[k])) for k in a if "lora_B" in k)
