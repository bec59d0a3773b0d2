"""LoRA supervised fine-tuning on accelerate."""
from .config import TuneConfig

__all__ = ["TuneConfig", "tune"]


def tune(*args, **kwargs):
    from .lora import tune as _tune

    return _tune(*args, **kwargs)
