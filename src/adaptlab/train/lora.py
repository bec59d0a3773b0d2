"""Where `tune` and the LoRA model setup lived before the loop took injected factories: the
names stay importable from here (studies call `adaptlab.train.lora.tune`)."""
from .loop import tune
from .methods.lora import LORA, attach, build

__all__ = ["tune", "LORA", "attach", "build"]
