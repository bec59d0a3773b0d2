"""Supervised fine-tuning on accelerate: the loop (setup / train_step / save) with injected model
factories (LoRA, full, soft prompt) and example formatters (chat, answer, explained)."""
from .config import TuneConfig
from .formatters import FORMATTERS, FormatError, Formatter, formatter_for

__all__ = ["TuneConfig", "tune", "setup", "train_step", "save", "TrainState", "FACTORIES",
           "ModelFactory", "Factory", "FORMATTERS", "Formatter", "FormatError", "formatter_for"]

_LAZY = {"setup": "loop", "train_step": "loop", "save": "loop", "TrainState": "loop",
         "FACTORIES": "methods", "ModelFactory": "factory", "Factory": "factory"}


def tune(*args, **kwargs):
    from .lora import tune as _tune

    return _tune(*args, **kwargs)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
