"""Shared benchmark plumbing: machine facts, peak RAM, a matmul ceiling, the example set, results.

Every contender runs in its own subprocess (see `run_child`) so that its peak RSS is its own and
one contender's allocator state or thread pool cannot slow the next one.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
PASSAGES = ROOT / "corpora" / "tone" / "passages.jsonl"
MODEL = "smollm2-135m-instruct"
ENV = {"OMP_WAIT_POLICY": "PASSIVE", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1", "ADAPTLAB_PROGRESS": "0"}
for _k, _v in ENV.items():  # children inherit these; setting them here is a no-op when run.py did
    os.environ.setdefault(_k, _v)

# The target every child benchmarks on, set by `bench.run --device/--precision/--random-init` and
# inherited by the children through the environment.
DEVICE = os.environ.get("ADAPTLAB_BENCH_DEVICE", "cpu")
PRECISION = os.environ.get("ADAPTLAB_BENCH_PRECISION", "fp32")
RANDOM_INIT = os.environ.get("ADAPTLAB_BENCH_RANDOM_INIT", "0") == "1"


def set_target(device: str, precision: str, random_init: bool) -> None:
    global DEVICE, PRECISION, RANDOM_INIT
    DEVICE, PRECISION, RANDOM_INIT = device, precision, random_init
    os.environ.update(ADAPTLAB_BENCH_DEVICE=device, ADAPTLAB_BENCH_PRECISION=precision,
                      ADAPTLAB_BENCH_RANDOM_INIT="1" if random_init else "0")


def target() -> dict:
    return {"device": DEVICE, "precision": PRECISION, "random_init": RANDOM_INIT}


def model_dir() -> str:
    """Config + tokenizer of the benchmarked model: ADAPTLAB_BENCH_MODEL_DIR (a directory with
    config.json and the tokenizer files, enough for --random-init) or the packaged student."""
    from adaptlab.models import resolve

    return os.environ.get("ADAPTLAB_BENCH_MODEL_DIR") or str(resolve(MODEL))


def load_bench_model():
    """(model, tokenizer) on DEVICE in fp32 (bf16 runs autocast over fp32 weights, as tune does):
    the real weights, or with RANDOM_INIT the same architecture freshly initialized from its
    config (throughput needs no real weights; losses are then not meaningful)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if not RANDOM_INIT:
        from adaptlab.models.load import load_model

        return load_model(MODEL, "fp32", device=DEVICE)
    path = model_dir()
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model.to(DEVICE).eval(), tok


def result_name(name: str) -> str:
    """bench/results/<name>.json for fp32 on the CPU; a `-bf16` suffix for bf16, a `gpu-` prefix
    on a GPU."""
    name = name if PRECISION == "fp32" else f"{name}-{PRECISION}"
    return name if DEVICE == "cpu" else f"gpu-{name}"


def sync() -> None:
    """Wait for queued GPU work, so wall-clock timings mean something."""
    if DEVICE != "cpu":
        import torch

        torch.cuda.synchronize()


_ISA = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")


# -- machine -----------------------------------------------------------------------------------
def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines())}


def machine_info() -> dict:
    """CPU model, cores, ISA flags that matter for matmuls, RAM, torch version/threads, GPU."""
    cpu = _lscpu()
    flags = set(cpu.get("Flags", "").split())
    info = {"cpu": cpu.get("Model name") or platform.processor(), "cores": os.cpu_count(),
            "isa": [f for f in _ISA if f in flags], "python": platform.python_version(),
            "ram_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    try:
        import torch
    except ImportError:
        return info
    info.update(torch=torch.__version__, torch_threads=torch.get_num_threads(),
                gpu=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None)
    for mod in ("transformers", "peft", "accelerate", "trl"):
        try:
            info[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return info


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(kib / 1024 if sys.platform != "darwin" else kib / 2**20, 1)


def matmul_flops(n: int = 2048, reps: int = 5, dtype: str = "float32") -> float:
    """Best-of-`reps` FLOP/s of an n x n matmul: the arithmetic ceiling MFU is measured against."""
    import torch

    dt = getattr(torch, dtype)
    a, b = (torch.randn(n, n, dtype=dt, device=DEVICE) for _ in range(2))
    a @ b  # warm-up: thread pool, packing buffers
    sync()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


# -- data --------------------------------------------------------------------------------------
def chat_examples(n_train: int = 120, n_val: int = 24) -> tuple[list[dict], list[dict]]:
    """Deterministic chats from the tone passages: a question, answered by the reference answer
    (short), the passage (medium) or both (long), so lengths spread over ~50-250 tokens.
    Every 6th chat is held out for validation."""
    rows = [json.loads(line) for line in PASSAGES.read_text(encoding="utf-8").splitlines() if line]
    rows.sort(key=lambda r: r["id"])
    chats = []
    for i, r in enumerate(rows[: n_train + n_val]):
        qa = r["qa"][i % len(r["qa"])]
        reply = (qa["answer"], r["passage"], qa["answer"] + "\n\n" + r["passage"])[i % 3]
        chats.append({"messages": [{"role": "user", "content": qa["question"]},
                                   {"role": "assistant", "content": reply}]})
    val = chats[5::6][:n_val]
    train = [c for i, c in enumerate(chats) if i % 6 != 5][:n_train]
    return train, val


def questions(n: int) -> list[list[dict]]:
    """`n` single-turn chats from the corpus questions (first question of each passage)."""
    rows = [json.loads(line) for line in PASSAGES.read_text(encoding="utf-8").splitlines() if line]
    rows.sort(key=lambda r: r["id"])
    return [[{"role": "user", "content": r["qa"][0]["question"]}] for r in rows[:n]]


# -- processes and results ---------------------------------------------------------------------
def run_child(module: str, args: list[str], timeout: float | None = None) -> dict:
    """Run `python -m module args… --json-out TMP` in a fresh process; return the JSON it wrote."""
    with tempfile.TemporaryDirectory(prefix="bench-") as d:
        out = Path(d) / "result.json"
        cmd = [sys.executable, "-m", module, *args, "--json-out", str(out)]
        env = {**os.environ, **ENV}
        load_before = os.getloadavg()[0]
        t = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout)
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"{' '.join(cmd)} failed with exit code {proc.returncode}")
        res = json.loads(out.read_text())
        res["process_wall_s"] = round(time.perf_counter() - t, 1)
        # 1-minute load average around the child: > its own threads means something else competed
        res["loadavg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        return res


def write_json_atomic(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_result(name: str, data: dict, machine: dict | None = None, quick: bool = False) -> Path:
    """bench/results/<name>.json (quick runs: bench/results/quick/), written atomically, with the
    machine it was measured on."""
    record = {"name": name, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": machine or machine_info(), **data}
    record.update(target())
    return write_json_atomic((RESULTS / "quick" if quick else RESULTS) / f"{result_name(name)}.json",
                             record)
