"""A stand-in for adaptlab.train.lora.tune in study tests: writes placeholder weights (the file a
method writes, with content that differs between runs) and no model."""
from __future__ import annotations

from pathlib import Path


def fake_tune(cfg, examples, out, source="data", eval_hook=None, **kw):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = "model.safetensors" if cfg.method == "full" else "adapter_model.safetensors"
    (out / weights).write_bytes(f"{cfg.target} {len(examples)} {cfg.seed} {source}".encode())
    (out / "adapter_config.json").write_text("{}")
    return {"steps": len(examples) // cfg.batch_size, "final_loss": 1.0}
