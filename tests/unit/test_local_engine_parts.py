"""lm.engine's small pieces: the shared-prefix length, precision choice, sampling."""
from __future__ import annotations

import pytest

from adaptlab.lm import engine


@pytest.mark.parametrize("seqs, keep, want", [
    ([[1, 2, 3, 4], [1, 2, 3, 5]], 1, 3),
    ([[1, 2, 3], [1, 2, 3, 4]], 1, 2),      # every sequence keeps >= 1 token of its own
    ([[1, 2, 3], [1, 2, 3]], 1, 2),
    ([[1, 2, 3], [1, 2, 3, 4]], 0, 3),
    ([[7, 2], [8, 2]], 1, 0),
    ([[1, 2, 3]], 1, 0),                    # one sequence: nothing to share
    ([[1], [1, 2]], 1, 0),
    ([], 1, 0),
])
def test_shared_prefix(seqs, keep, want):
    assert engine.shared_prefix(seqs, keep=keep) == want


def test_resolve_precision(monkeypatch):
    assert engine.resolve_precision("fp32") == "fp32"
    assert engine.resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(engine, "native_bf16", lambda device="cpu": True)
    assert engine.resolve_precision("auto") == "bf16"
    monkeypatch.setattr(engine, "native_bf16", lambda device="cpu": False)
    assert engine.resolve_precision("auto") == "fp32"


def test_native_bf16_reads_cpu_flags():
    flags = open("/proc/cpuinfo").read()
    want = "avx512_bf16" in flags or "amx_bf16" in flags
    assert engine.native_bf16("cpu") is want


def test_auto_precision_of_a_loaded_model_is_its_dtype():
    torch = pytest.importorskip("torch")
    m = torch.nn.Linear(2, 2)
    assert engine.resolve_precision("auto", model=m) == "fp32"
    assert engine.resolve_precision("auto", model=m.to(torch.bfloat16)) == "bf16"


def test_pick_greedy_and_nucleus():
    torch = pytest.importorskip("torch")
    logits = torch.tensor([[0.0, 3.0, 1.0], [5.0, 0.0, 4.9]])
    rows = [engine._Row(0, 0, gen=torch.Generator().manual_seed(0)),
            engine._Row(1, 0, gen=torch.Generator().manual_seed(1))]
    assert engine.pick(logits, rows, 0.0, 1.0) == [1, 0]
    # top_p small enough keeps only the most likely token
    for _ in range(20):
        assert engine.pick(logits, rows, 1.0, 0.3) == [1, 0]
    # same seeds, same draws
    a = [engine.pick(logits, [engine._Row(0, 0, gen=torch.Generator().manual_seed(s))], 2.0, 1.0)
         for s in range(30)]
    b = [engine.pick(logits, [engine._Row(0, 0, gen=torch.Generator().manual_seed(s))], 2.0, 1.0)
         for s in range(30)]
    assert a == b and len({x[0] for x in a}) > 1
