"""The training loop's injected pieces on the real student (smollm2-135m-instruct, CPU): full
fine-tuning, soft prompt tuning, a caller's own factory and formatter, and kill + resume of the
full and prompt methods. Small: 4 short chats, batch 2, 2-3 steps."""
from __future__ import annotations

import csv
from dataclasses import replace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from adaptlab.models.registry import PACKAGED, source_files  # noqa: E402

MODEL = "smollm2-135m-instruct"
if source_files(PACKAGED[MODEL]) is None:
    pytest.skip(f"{MODEL} not installed ({PACKAGED[MODEL].install})", allow_module_level=True)

EXAMPLES = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in [("What colour is the sky?", "Blue."), ("What is 2 + 2?", "4."),
                         ("Name a fruit.", "An apple."), ("Say hello.", "Hello!")]]
PROBE = "q_proj"  # a base weight every method may or may not touch


class Killed(Exception):
    pass


# -- helpers -------------------------------------------------------------------------------------
def _cfg(**kw):
    from adaptlab.train import TuneConfig

    return TuneConfig(**{"max_steps": 2, "batch_size": 2, "save_every": 0, "max_length": 64, **kw})


def _base_weights(model) -> dict:
    """name in the bare transformers model -> tensor, for any of our wrappers (PEFT or none)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return {n.replace(".base_layer.", "."): p.detach().clone() for n, p in base.named_parameters()
            if "lora_" not in n}


def _assert_same(a: dict, b: dict, what: str) -> None:
    assert a.keys() == b.keys() and a, what
    diff = [k for k in a if not torch.equal(a[k], b[k])]
    assert not diff, f"{what}: {len(diff)} tensors differ, e.g. {diff[:3]}"


def _loss_rows(path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def _logits(model, ids):
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits[:, -ids.shape[1]:].float()  # prompt tokens dropped


@pytest.fixture(scope="module")
def base():
    """The untouched base weights and tokenizer."""
    from adaptlab.models.load import load_model

    model, tok = load_model(MODEL)
    ids = torch.tensor([tok("What do bees make?").input_ids])
    return {"weights": _base_weights(model), "tok": tok, "ids": ids, "logits": _logits(model, ids)}


def _capture(seen: dict, clone_trainable: bool = True):
    """An eval hook keeping, per step, the weights of the model tune() trains."""
    def hook(step, model, tok):
        seen[step] = {"base": _base_weights(model),
                      "trainable": {n: p.detach().clone() if clone_trainable else None
                                    for n, p in model.named_parameters() if p.requires_grad}}
        return {}
    return hook


# -- full fine-tuning ------------------------------------------------------------------------------
def test_full_finetuning_changes_base_weights_and_saves_the_model(tmp_path, base):
    from safetensors.torch import load_file

    from adaptlab.models.load import load_model
    from adaptlab.train.loop import tune

    seen: dict = {}
    summary = tune(_cfg(method="full", eval_every=2), EXAMPLES, tmp_path,
                   eval_hook=_capture(seen, clone_trainable=False))
    assert summary["steps"] == 2 and sorted(seen) == [0, 2]
    before, after = seen[0]["base"], seen[2]["base"]
    _assert_same(before, base["weights"], "untrained full model = base")
    assert set(seen[2]["trainable"]) == set(after)  # every weight trains
    changed = [k for k in after if not torch.equal(after[k], before[k])]
    assert any(PROBE in k for k in changed) and len(changed) > len(after) // 2, len(changed)
    for name in ("model.safetensors", "config.json", "tokenizer.json", "loss.csv",
                 "train_summary.json"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "adapter_config.json").exists()
    assert not (tmp_path / "checkpoints").exists()
    reloaded, _ = load_model(str(tmp_path))  # the output dir is a model adaptlab loads
    _assert_same(_base_weights(reloaded), after, "reloaded full model")
    assert load_file(tmp_path / "model.safetensors")  # safetensors, not pickle


# -- soft prompt -----------------------------------------------------------------------------------
def test_prompt_tuning_trains_only_the_prompt_and_writes_an_adapter(tmp_path, base):
    from safetensors.torch import load_file

    from adaptlab.models.load import load_model
    from adaptlab.train.loop import tune

    seen: dict = {}
    text = "Answer in one short sentence."
    cfg = _cfg(method="prompt", num_virtual_tokens=4, prompt_init_text=text, lr=3e-2, eval_every=2)
    tune(cfg, EXAMPLES, tmp_path, eval_hook=_capture(seen))
    (name, init), = seen[0]["trainable"].items()
    assert name.endswith("prompt_encoder.default.embedding.weight") and init.shape == (4, 576)
    ids = base["tok"](text).input_ids[:4]  # init from the text's embeddings
    assert torch.equal(init, base["weights"]["model.embed_tokens.weight"][ids])
    trained = seen[2]["trainable"][name]
    assert not torch.equal(trained, init), "the soft prompt did not change"
    for step in (0, 2):
        _assert_same(seen[step]["base"], base["weights"], f"base weights at step {step}")

    assert load_file(tmp_path / "adapter_model.safetensors").keys() == {"prompt_embeddings"}
    loaded, _ = load_model(MODEL, adapter=str(tmp_path))  # adaptlab's adapter path loads it
    assert torch.equal(peft.get_peft_model_state_dict(loaded)["prompt_embeddings"], trained)
    _assert_same(_base_weights(loaded), base["weights"], "base under the loaded prompt")
    assert not torch.allclose(_logits(loaded, base["ids"]), base["logits"], atol=1e-4)


def test_prompt_random_init_is_seeded(base):
    from adaptlab.train import FACTORIES

    def init(seed):
        torch.manual_seed(seed)  # as setup() does before build
        model, _ = FACTORIES["prompt"].build(_cfg(method="prompt", num_virtual_tokens=3))
        return peft.get_peft_model_state_dict(model)["prompt_embeddings"]

    a, b, c = init(0), init(0), init(1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    vocab = base["weights"]["model.embed_tokens.weight"]  # vocabulary embeddings, not N(0, 1)
    assert all(bool((vocab == r).all(dim=1).any()) for r in a)


# -- a caller's own factory and formatter ------------------------------------------------------------
def test_custom_factory_and_formatter_are_used(tmp_path, base):
    from adaptlab.train.methods import lora
    from adaptlab.train.loop import tune

    built, formatted = [], []

    def build(cfg):
        model, tok = lora.build(replace(cfg, lora_r=2, target_modules=["q_proj"]))
        built.append(model)
        return model, tok

    def shout(example):
        formatted.append(example)
        return [{**m, "content": m["content"].upper()} for m in example["messages"]]

    tune(_cfg(), EXAMPLES, tmp_path, factory=replace(lora.LORA, build=build), formatter=shout)
    assert len(built) == 1 and len(formatted) == len(EXAMPLES)
    keys = set(peft.get_peft_model_state_dict(built[0]))
    assert keys and all(".q_proj." in k for k in keys), sorted(keys)[:3]  # r=2 on q_proj only
    _assert_same(_base_weights(built[0]), base["weights"], "LoRA leaves the base alone")
    lora_b = [p for n, p in built[0].named_parameters() if "lora_B" in n]
    assert lora_b and all(p.shape[1] == 2 for p in lora_b)
    assert any(p.abs().sum() > 0 for p in lora_b), "the adapter did not train"


# -- kill + resume gives the same weights ------------------------------------------------------------
def _kill_at(step: int):
    def hook(s, model, tok):
        if s == step:
            raise Killed
        return {}
    return hook


def _resume_matches(tmp_path, cfg, weights_file: str) -> None:
    """A run killed after step 2 (checkpoint at step 1) and resumed ends where an uninterrupted
    run does, to the bit."""
    from safetensors.torch import load_file

    from adaptlab.train.loop import tune

    cfg = replace(cfg, max_steps=3, save_every=1)
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    with pytest.raises(Killed):
        tune(replace(cfg, eval_every=1), EXAMPLES, killed, eval_hook=_kill_at(2))
    assert (killed / "checkpoints" / "step-1").is_dir()
    assert not (killed / weights_file).exists()
    tune(cfg, EXAMPLES, killed)
    tune(cfg, EXAMPLES, ref)
    _assert_same(load_file(killed / weights_file), load_file(ref / weights_file), "after resume")
    assert _loss_rows(killed / "loss.csv") == _loss_rows(ref / "loss.csv")
    assert len(_loss_rows(ref / "loss.csv")) == 3
    assert not (killed / "checkpoints").exists()


def test_prompt_kill_and_resume_is_bit_identical(tmp_path):
    _resume_matches(tmp_path, _cfg(method="prompt", num_virtual_tokens=4, lr=3e-2),
                    "adapter_model.safetensors")


@pytest.mark.slow
def test_full_kill_and_resume_is_bit_identical(tmp_path):
    _resume_matches(tmp_path, _cfg(method="full"), "model.safetensors")


def test_checkpoint_of_another_method_is_refused(tmp_path):
    from adaptlab.errors import AdaptlabError
    from adaptlab.train.loop import tune

    with pytest.raises(Killed):  # at step 2 of 2, after the checkpoint at step 1
        tune(_cfg(method="prompt", num_virtual_tokens=2, save_every=1, eval_every=1), EXAMPLES,
             tmp_path, eval_hook=_kill_at(2))
    assert (tmp_path / "checkpoints" / "step-1" / "prompt.safetensors").is_file()
    with pytest.raises(AdaptlabError, match="no lora.safetensors .*prompt.safetensors"):
        tune(_cfg(), EXAMPLES, tmp_path)
