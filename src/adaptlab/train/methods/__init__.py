"""The model factories, by `TuneConfig.method`: a plain dict."""
from ..factory import ModelFactory
from .full import FULL
from .lora import LORA
from .prompt import PROMPT

FACTORIES: dict[str, ModelFactory] = {"lora": LORA, "full": FULL, "prompt": PROMPT}
