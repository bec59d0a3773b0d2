"""Load a model + tokenizer from any reference, at a precision, optionally with a LoRA adapter."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from ..errors import AdaptlabError, require
from .chat import ensure_template
from .registry import resolve

Precision = Literal["fp32", "bf16", "int8"]
"""Training and inference precisions. `int8-dynamic` (inference only, CPU) is `quantize_dynamic`
applied to an fp32 load (see LocalLM)."""
INT8_BACKENDS = ("bitsandbytes", "torchao")
"""In the order tried; $ADAPTLAB_INT8_BACKEND (or int8_config's `backend`) picks one."""


def int8_config(device: str, backend: str | None = None):
    """8-bit frozen base: bitsandbytes (CPU and CUDA); torchao where bitsandbytes is missing.

    `backend`, or $ADAPTLAB_INT8_BACKEND, picks one (the tests use it to run the torchao path).
    """
    import importlib.util
    import os

    backend = backend or os.environ.get("ADAPTLAB_INT8_BACKEND") or None
    if backend is not None and backend not in INT8_BACKENDS:
        raise AdaptlabError(f"int8 backend '{backend}': expected one of {', '.join(INT8_BACKENDS)}")
    installed = [b for b in INT8_BACKENDS if importlib.util.find_spec(b)]
    if backend is None and not installed:
        raise AdaptlabError("precision=int8 needs bitsandbytes or torchao: pip install bitsandbytes")
    if backend is not None and backend not in installed:
        raise AdaptlabError(f"int8 backend '{backend}' is not installed: pip install {backend}")
    from transformers import BitsAndBytesConfig, TorchAoConfig

    if (backend or installed[0]) == "bitsandbytes":
        return BitsAndBytesConfig(load_in_8bit=True)
    from torchao.quantization import Int8WeightOnlyConfig

    return TorchAoConfig(quant_type=Int8WeightOnlyConfig())


def load_tokenizer(ref: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    path = resolve(ref)
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    ensure_template(tok)
    return tok


def quantize_dynamic(model, device: str = "cpu"):
    """Inference-only int8 (`precision: int8-dynamic`): every nn.Linear's weights quantized to
    int8 per output channel, activations quantized per batch at run time, matmuls on torch's
    fbgemm/x86 int8 kernels. On a 2-core AVX2 CPU the 0.5B teacher decodes about 1.8x faster than
    fp32 (bench/results/teacher.json); its outputs are not fp32's (the bench reports how many
    agree). CPU only; the model is changed in place and returned.

    torch.ao.quantization is deprecated in favour of torchao, but torchao's CPU int8 dynamic path
    (Int8DynamicActivationInt8WeightConfig) ran over 10x slower than this one here, so this one is
    kept until torchao has fast x86 kernels."""
    import warnings

    torch = require("torch", "train")
    if device != "cpu":
        raise AdaptlabError(f"precision int8-dynamic runs on the CPU only (device '{device}'); "
                            "use bf16 or int8 there")
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic as qd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice, once per Linear
        return qd(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8, inplace=True)


def load_model(ref: str, precision: Precision = "fp32", adapter: str | None = None,
               device: str = "cpu", trust_remote_code: bool = False):
    """Returns (model, tokenizer). Weights load from safetensors only."""
    torch = require("torch", "train")
    transformers = require("transformers", "train")
    from .. import progress

    if not progress.enabled():
        transformers.utils.logging.disable_progress_bar()
    path = resolve(ref)
    if adapter is not None:
        check_adapter_dir(adapter)  # before the base model loads, not after
    kwargs = dict(trust_remote_code=trust_remote_code, use_safetensors=True)
    if precision == "int8":
        kwargs.update(quantization_config=int8_config(device), device_map=device, dtype=torch.float32)
    else:
        kwargs["dtype"] = torch.bfloat16 if precision == "bf16" else torch.float32
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except OSError as e:
        raise AdaptlabError(f"cannot load model '{ref}': {str(e).splitlines()[0]}") from None
    except ValueError as e:
        if "trust_remote_code" not in str(e):
            raise
        raise AdaptlabError(f"cannot load model '{ref}': it needs code of its own "
                            "(trust_remote_code), which adaptlab runs only when asked") from None
    if precision != "int8":
        model.to(device)
    tok = load_tokenizer(ref, trust_remote_code)
    if adapter is not None:
        model = attach_adapter(model, adapter)
    return model.eval(), tok


def check_adapter_dir(adapter: str | Path) -> Path:
    """The adapter directory, if it holds a config and safetensors weights; else a one-line error.

    PEFT falls back to adapter_model.bin (a pickle, loaded with torch.load) when the safetensors
    file is missing: adaptlab refuses that instead.
    """
    p = Path(adapter)
    if not (p / "adapter_config.json").exists():
        raise AdaptlabError(f"{adapter}: not an adapter directory (no adapter_config.json)")
    if not (p / "adapter_model.safetensors").is_file():
        if (p / "adapter_model.bin").exists():
            raise AdaptlabError(f"{adapter}: adapter weights only in pickle format (adapter_model.bin); "
                                "adaptlab loads adapter_model.safetensors only")
        raise AdaptlabError(f"{adapter}: no adapter weights (adapter_model.safetensors)")
    return p


def attach_adapter(model, adapter: str, name: str = "default"):
    """Attach a PEFT adapter directory (or add it under `name` to an existing PeftModel)."""
    peft = require("peft", "train")
    p = check_adapter_dir(adapter)
    if isinstance(model, peft.PeftModel):
        model.load_adapter(str(p), adapter_name=name)
        return model
    return peft.PeftModel.from_pretrained(model, str(p), adapter_name=name)
