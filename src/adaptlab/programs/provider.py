"""A DSPy provider whose models adaptlab serves and whose fine-tuning is adaptlab's LoRA trainer.

    provider = AdaptlabProvider("smollm2-135m-instruct", workdir="runs/bt/adapters")
    lm = provider.lm(temperature=0, max_tokens=128)    # a dspy.LM on adaptlab's server
    program.set_lm(lm); dspy.configure(lm=lm, adapter=FieldAdapter())
    optimized = dspy.BetterTogether(metric=...).compile(program, trainset=..., valset=...)

One `adaptlab serve` server (in this process, on a free loopback port) holds the base model; the
`dspy.LM`s it hands out talk to it over the OpenAI API (`openai/<served name>` at its URL), so
DSPy's engines, caching, threads and retries work as against any OpenAI-compatible server.

DSPy's provider hooks (`dspy.Provider`):
- `launch(lm)`: the model behind `lm` is loaded (a `LocalLM` with `batch_size` decode slots;
  concurrent requests from DSPy's threads are batched by the server) and the adapter `lm`
  names, if any, is served. Idempotent.
- `kill(lm)`: `lm` is no longer needed; when no launched LM is left the base model is unloaded
  (BootstrapFinetune kills the LM before training, to free memory for the trainer). The server's
  port and the adapters' names stay: a later `launch` loads them again.
- `finetune(job, model, train_data, "chat", train_kwargs)`: LoRA on the chat records DSPy
  bootstrapped, with `adaptlab.train.tune`; the adapter is written under `workdir/<name>` and
  added to the running server as `<name>` (`<base>-ft-<digest>`, unique per training data and
  settings), and `openai/<name>` is returned, which DSPy turns into the new `dspy.LM`. Training
  always starts from the base model (a model name that is an adapter trains a new adapter on the
  base). A finished adapter with the same digest is reused, so a re-run after a crash does not
  train again; a killed training resumes from its last checkpoint.

`train_kwargs` are `TuneConfig` fields (`lora_r`, `lora_alpha`, `lr`, `epochs`, `batch_size`,
`max_length`, `target_modules`, `seed`, ...); the Hugging Face names `num_train_epochs`,
`learning_rate`, `per_device_train_batch_size`, `gradient_accumulation_steps` and
`max_seq_length` are read as theirs. Anything else is an error before training starts.

`provider.usage()` counts generations and tokens per served name; `provider.jobs` lists each
fine-tune with its examples, steps and seconds (the study's cost table reads both).
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import dspy

from ..errors import AdaptlabError
from ..io import read_json, write_json

_HF_NAMES = {"num_train_epochs": "epochs", "learning_rate": "lr",
             "per_device_train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum",
             "max_seq_length": "max_length", "lora_rank": "lora_r", "r": "lora_r"}
_NOT_SETTABLE = {"model"}  # the provider's base model


@dataclass
class FinetuneJob:
    """One fine-tune the provider ran (or reused): for cost tables."""

    name: str
    examples: int
    steps: int
    seconds: float
    reused: bool
    path: str


def tune_config(base: str, defaults: dict[str, Any], train_kwargs: dict[str, Any] | None):
    """The TuneConfig for a fine-tune of `base`: `defaults`, then DSPy's `train_kwargs` on top."""
    from ..train.config import TuneConfig

    known = {f.name for f in fields(TuneConfig)} - _NOT_SETTABLE
    merged: dict[str, Any] = {}
    for source in (defaults, train_kwargs or {}):
        for key, value in source.items():
            name = _HF_NAMES.get(key, key)
            if name not in known:
                raise AdaptlabError(f"train_kwargs: unknown setting `{key}` (use TuneConfig fields: "
                                    f"{', '.join(sorted(known))})")
            merged[name] = value
    return TuneConfig(model=base, **merged)


def served_name(model: str) -> str:
    """`openai/<name>` (DSPy's model string) -> the name the server serves it under."""
    return model.split("/", 1)[1] if model.startswith("openai/") else model


class AdaptlabProvider(dspy.Provider):
    """See the module docstring. `model`: a packaged model name or a local directory;
    `workdir`: where adapters are written (kept: a re-run reuses them); `precision`, `device`,
    `batch_size`: the served model's (and `tune` holds the trainer's); `tune`: TuneConfig
    defaults for every fine-tune (DSPy's train_kwargs override them); `lm_factory`: what
    `launch` loads (default: `LocalLM(model, precision, batch_size)`; tests pass a fake)."""

    def __init__(self, model: str, workdir: str | Path, *, precision: str = "fp32",
                 batch_size: int = 8, device: str = "cpu", tune: dict[str, Any] | None = None, host: str = "127.0.0.1",
                 port: int = 0, lm_factory: Callable[[], Any] | None = None):
        super().__init__()
        from ..serve import make_server

        self.finetunable = True
        self.base = model
        self.workdir = Path(workdir)
        self.precision, self.batch_size, self.device = precision, batch_size, device
        self.tune_defaults = dict(tune or {})
        self._make_lm = lm_factory or self._local_lm
        tune_config(model, self.tune_defaults, None)  # bad defaults fail now, not mid-compile
        self.jobs: list[FinetuneJob] = []
        self._launched: set[str] = set()
        self._lock = threading.RLock()
        self.server = make_server(None, self.base_name, host=host, port=port)
        self._thread = threading.Thread(target=self.server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True,
                                        name="adaptlab-provider-server")
        self._thread.start()

    def __repr__(self) -> str:
        return f"AdaptlabProvider({self.base!r}, url={self.url!r})"

    def __deepcopy__(self, memo):  # DSPy deep-copies programs and their LMs: one server for all
        return self

    def _local_lm(self):
        from ..lm.local import LocalLM

        return LocalLM(self.base, precision=self.precision, batch_size=self.batch_size,
                       device=self.device)

    @property
    def base_name(self) -> str:
        """The base model's served name (a directory's last component)."""
        return Path(self.base).name if ("/" in self.base or Path(self.base).exists()) else self.base

    @property
    def url(self) -> str:
        return self.server.url

    def lm(self, name: str | None = None, **kwargs) -> dspy.LM:
        """A `dspy.LM` for the base (or the adapter served as `name`) on this provider's server.
        kwargs go to `dspy.LM` (temperature, max_tokens, cache, num_retries...)."""
        kwargs.setdefault("api_key", "adaptlab-local")
        return dspy.LM(f"openai/{name or self.base_name}", api_base=self.url, provider=self,
                       **kwargs)

    def close(self) -> None:
        """Stop the server and unload the model."""
        self.server.shutdown()
        self.server.server_close()
        self.server.set_lm(None)
        self._thread.join(5)

    # -- dspy.Provider hooks (instance methods: DSPy calls them on the provider object) --------

    @staticmethod
    def is_provider_model(model: str) -> bool:
        return False  # only ever chosen explicitly (provider=...)

    def launch(self, lm, launch_kwargs: dict | None = None) -> None:
        name = served_name(lm.model)
        with self._lock:
            self.server.adapter_of(name)  # a name this server does not serve: an error now
            if self.server.lm is None:
                self.server.set_lm(self._make_lm())
            self._launched.add(name)

    def kill(self, lm, launch_kwargs: dict | None = None) -> None:
        with self._lock:
            self._launched.discard(served_name(lm.model))
            if not self._launched and self.server.lm is not None:
                self.server.set_lm(None)
                import gc

                gc.collect()

    def finetune(self, job, model: str, train_data: list[dict[str, Any]], train_data_format,
                 train_kwargs: dict[str, Any] | None = None) -> str:
        fmt = getattr(train_data_format, "value", train_data_format)
        if fmt not in ("chat", None):
            raise AdaptlabError(f"AdaptlabProvider trains on chat records, not {fmt!r}")
        if not train_data:
            raise AdaptlabError("no training data: no bootstrapped trace passed the metric")
        for i, rec in enumerate(train_data):
            if not isinstance(rec, dict) or not isinstance(rec.get("messages"), list):
                raise AdaptlabError(f"train_data[{i}]: expected {{'messages': [...]}}")
        cfg = tune_config(self.base, self.tune_defaults, train_kwargs)
        digest = hashlib.sha256(json.dumps([asdict(cfg), train_data], sort_keys=True,
                                           default=str).encode()).hexdigest()[:10]
        name = f"{self.base_name}-ft-{digest}"
        out = self.workdir / name
        record = out / "dspy_finetune.json"
        started = time.perf_counter()
        reused = record.exists() and (out / "adapter_model.safetensors").exists()
        if reused:
            summary = read_json(record)["summary"]
        else:
            from .. import train

            summary = train.tune(cfg, train_data, out, source=f"DSPy fine-tune {name}")
            write_json(record, {"name": name, "examples": len(train_data), "summary": summary})
        self.jobs.append(FinetuneJob(name, len(train_data), int(summary.get("steps", 0)),
                                     round(time.perf_counter() - started, 2), reused, str(out)))
        if name not in self.server.adapters:
            self.server.add_adapter(name, str(out))
        return f"openai/{name}"

    # -- cost ---------------------------------------------------------------------------------

    def usage(self) -> dict[str, dict[str, int]]:
        """Generations and tokens answered so far, per served name."""
        return {k: dict(v) for k, v in self.server.usage.items()}
