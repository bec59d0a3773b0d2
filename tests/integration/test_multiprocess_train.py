"""`adaptlab tune` under `accelerate launch`, two processes on the CPU (gloo), against one process
with the same global batch (batch_size 2 x 2 processes = 4 x 1).

What would make these fail: ranks training on identical batches (the adapter then equals one
process at batch_size 2: the `control` below, far outside the tolerance); the ranks' gradients
not synchronized or not weighted by their labelled tokens (measured: 1.2e-3 off with plain
per-rank means); a second process writing or logging; a resume on which the ranks disagree.

Launch: `accelerate launch --multi_gpu --num_processes 2` with no GPU visible. accelerate 1.15's
`--cpu` starts one process unless it is given an mpirun hostfile; through torchrun, adaptlab's
loop sees no accelerator and takes the CPU and gloo (train/dist.py).

The fast test trains a tiny random Llama (SmolLM2's tokenizer) on 9 chats, so that one global
micro-batch has a single example and rank 1 runs it at weight 0; the slow one trains the real
SmolLM2-135M on 8 chats, killed after step 2 and resumed with two processes.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("accelerate")

from adaptlab.models.registry import PACKAGED, source_files  # noqa: E402
from train_chats import examples  # noqa: E402

MODEL = "smollm2-135m-instruct"
if source_files(PACKAGED[MODEL]) is None:
    pytest.skip(f"{MODEL} not installed ({PACKAGED[MODEL].install})", allow_module_level=True)

EXAMPLES = examples(9)
# LoRA r=4, no dropout (its masks are per rank), a learning rate that moves the adapter visibly
COMMON = dict(max_steps=3, lora_r=4, lora_dropout=0.0, max_length=64, lr=1e-3, warmup_steps=1)
TOL = 1e-4  # max |2 processes - 1 process| over the adapter; measured 7e-9 (tiny), 1.2e-5 (135M)
ROOT = Path(__file__).resolve().parents[2]


# -- helpers -------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACCELERATE_", "WORLD_SIZE", "LOCAL_RANK", "RANK", "MASTER_"))}
    return {**env, "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
            "OMP_WAIT_POLICY": "PASSIVE", "ADAPTLAB_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}


def _launch(*target: str) -> subprocess.CompletedProcess:
    """`accelerate launch` two processes on `target` (a script and its args, or -m MODULE ...)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), *target]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=400)


def _tune_cli(data: Path, out: Path, **cfg) -> subprocess.CompletedProcess:
    """`adaptlab tune` on two processes."""
    return _launch("-m", "adaptlab.cli", "tune", "--data", str(data), "--out", str(out),
                   *(f"{k}={v}" for k, v in cfg.items()))


def _ok(run: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert run.returncode == 0, f"exit {run.returncode}\n{run.stderr[-4000:]}"
    return run


def _tune_here(out: Path, examples=EXAMPLES, **cfg) -> Path:
    """One process, in this one, through the studies' entry point."""
    from adaptlab.train import TuneConfig
    from adaptlab.train.lora import tune

    tune(TuneConfig(**cfg), examples, out)
    return out


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "adapter_model.safetensors")


def _maxdiff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys() and a
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def _loss_rows(out: Path) -> list[dict]:
    with open(out / "loss.csv", newline="") as f:
        return list(csv.DictReader(f))


def _files(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                  and not p.relative_to(out).parts[0] == "tb")


def _data(tmp_path: Path, examples) -> Path:
    p = tmp_path / "data.jsonl"
    p.write_text("".join(json.dumps(e) + "\n" for e in examples))
    return p


def _assert_one_writer(run: subprocess.CompletedProcess, out: Path, ref: Path) -> None:
    """One process logged and wrote: rank 1's lines are absent, the files are the one-process
    run's (no leftovers of a second writer's temp files), the summary says 2 processes."""
    assert run.stderr.count("[adaptlab] training on 2 processes (MULTI_CPU, cpu)") == 1, run.stderr
    assert run.stderr.count("[adaptlab] process 0 of 2 wrote") == 1, run.stderr
    assert "[adaptlab] process 1 of 2" not in run.stderr
    assert _files(out) == _files(ref)
    events = lambda d: sorted((d / "tb").glob("events.*"))  # noqa: E731 (named by host and pid)
    assert len(events(out)) == len(events(ref)) <= 1
    assert not [p for p in out.rglob(".*")], "temp files left behind"
    assert json.loads((out / "train_summary.json").read_text())["processes"] == 2


def _assert_same_log(out: Path, ref: Path) -> None:
    """loss.csv: the loss over both ranks' shares (float tolerance) and the global token count."""
    a, b = _loss_rows(out), _loss_rows(ref)
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b] and len(a) == COMMON["max_steps"]
    assert [r["lr"] for r in a] == [r["lr"] for r in b]
    assert all(abs(float(x["loss"]) - float(y["loss"])) < 1e-4 for x, y in zip(a, b)), (a, b)


# -- pure parts: shares and steps ---------------------------------------------------------------
@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_shares_partition_every_global_batch(world, n):
    from adaptlab.train.dist import shard

    batch = list(range(10, 10 + n))
    shares = [shard(batch, r, world) for r in range(world)]
    real = [s for s, ok in shares if ok]
    assert sorted(i for s in real for i in s) == batch  # disjoint, and nothing left out
    assert all(s == batch[:1] for s, ok in shares if not ok)  # a filler, at weight 0
    assert sum(ok for _, ok in shares) == min(world, n)


def test_global_batches_and_steps_do_not_depend_on_the_split():
    from adaptlab.train import TuneConfig
    from adaptlab.train.batches import run_batches, total_steps

    lengths = [5, 9, 3, 7, 7, 2, 11, 4, 6]
    for ga in (1, 2):
        one, two = TuneConfig(batch_size=4, grad_accum=ga), TuneConfig(batch_size=2, grad_accum=ga)
        assert total_steps(one, 9) == total_steps(two, 9, world=2) == -(-3 * 2 // ga)
        assert run_batches(one, lengths, 6) == run_batches(two, lengths, 6, world=2)
    assert total_steps(TuneConfig(batch_size=2), 9, world=2) != total_steps(TuneConfig(batch_size=2), 9)


_LAUNCH_VARS = ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE",
                "MV2_COMM_WORLD_SIZE", "ACCELERATE_USE_CPU", "ACCELERATE_MIXED_PRECISION")


@pytest.mark.parametrize("env, device, gpus, cpu", [
    ({}, "cpu", True, True),  # no launcher: TuneConfig.device
    ({}, "cuda", True, False),
    ({"ACCELERATE_USE_CPU": "False", "ACCELERATE_MIXED_PRECISION": "no"}, "cpu", True, False),
    ({"ACCELERATE_USE_CPU": "True"}, "cuda", True, True),  # the launcher's --cpu
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "cpu", True, False),  # torchrun on GPUs
    ({"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda", False, True),  # torchrun, no GPU: gloo
])
def test_the_launcher_decides_the_device(monkeypatch, env, device, gpus, cpu):
    from adaptlab.train import dist

    for k in _LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(dist, "_accelerator_present", lambda: gpus)
    assert dist.launched() == bool(env)
    assert dist.use_cpu(device) is cpu


# -- two processes = one process with the same global batch ---------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A random 2-layer Llama with SmolLM2's tokenizer and chat template: a second of training."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from adaptlab.models.load import load_tokenizer

    d = tmp_path_factory.mktemp("tiny-llama")
    tok = load_tokenizer(MODEL)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, tie_word_embeddings=True)
    LlamaForCausalLM(cfg).save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    return d


def test_two_processes_train_what_one_does_with_the_same_global_batch(tmp_path, tiny):
    cfg = {**COMMON, "model": str(tiny), "save_every": 0}
    ref = _tune_here(tmp_path / "one", batch_size=4, **cfg)
    control = _tune_here(tmp_path / "same-batches", batch_size=2, **cfg)  # unsharded ranks' result
    run = _ok(_tune_cli(_data(tmp_path, EXAMPLES), tmp_path / "two", batch_size=2, **cfg))
    two = tmp_path / "two"

    diff, control_diff = _maxdiff(_adapter(two), _adapter(ref)), _maxdiff(_adapter(control),
                                                                         _adapter(ref))
    print(f"max |2 proc - 1 proc| = {diff:.3g}; identical batches would give {control_diff:.3g}")
    assert control_diff > 10 * TOL  # the tolerance tells the two apart
    assert diff < TOL
    _assert_one_writer(run, two, ref)
    _assert_same_log(two, ref)


@pytest.mark.slow
def test_smollm2_two_processes_match_and_resume(tmp_path):
    """The real student: 2 processes = 1 process; killed after step 2 (checkpoint at step 1), the
    2-process run resumes (every rank from step 1) and ends where the uninterrupted one does."""
    data = _data(tmp_path, EXAMPLES[:8])
    cfg = {**COMMON, "save_every": 1}
    ref = _tune_here(tmp_path / "one", EXAMPLES[:8], batch_size=4, **cfg)
    full = tmp_path / "two"
    run = _ok(_tune_cli(data, full, batch_size=2, **cfg))
    diff = _maxdiff(_adapter(full), _adapter(ref))
    print(f"SmolLM2-135M: max |2 proc - 1 proc| = {diff:.3g}")
    assert diff < TOL
    _assert_one_writer(run, full, ref)
    _assert_same_log(full, ref)

    killed = tmp_path / "killed"
    driver = tmp_path / "stop_at_2.py"  # a study's tuning stage, stopped by its eval hook
    driver.write_text(
        "import json, sys\n"
        "from adaptlab.data import load_examples\n"
        "from adaptlab.train import TuneConfig\n"
        "from adaptlab.train.lora import tune\n"
        "def stop(step, model, tok):\n"
        "    if step == 2:\n"
        "        raise SystemExit(3)\n"
        "    return {}\n"
        "cfg = TuneConfig(**json.loads(sys.argv[3]), eval_every=1)\n"
        "tune(cfg, load_examples(sys.argv[1]), sys.argv[2], eval_hook=stop)\n")
    stopped = _launch(str(driver), str(data), str(killed), json.dumps({**cfg, "batch_size": 2}))
    assert stopped.returncode != 0
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-1"]
    assert not (killed / "adapter_model.safetensors").exists()

    resumed = _ok(_tune_cli(data, killed, batch_size=2, **cfg))
    assert resumed.stderr.count("[adaptlab] resuming") == 1, resumed.stderr
    assert f"resuming {killed} from step 1" in resumed.stderr
    assert _maxdiff(_adapter(killed), _adapter(full)) == 0.0
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(_loss_rows(killed)) == drop(_loss_rows(full))
    assert not (killed / "checkpoints").exists()
