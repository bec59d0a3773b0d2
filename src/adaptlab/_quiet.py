"""Log noise from optional dependencies that nothing in adaptlab can act on, filtered once."""
import logging as _logging


def _not_torchao_import_noise(record: _logging.LogRecord) -> bool:
    """Drop the warnings torchao's import logs on a CPU-only torch: its CUDA kernel libraries
    failing to load, and its Enum pytree registrations. transformers imports torchao on every
    model load once it is installed (the int8 fallback); nothing in them is the user's to act on."""
    msg = record.getMessage()
    return not ((msg.startswith("Failed to load ") and "torchao" in msg)
                or "is an Enum subclass and is now natively supported" in msg)


for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).addFilter(_not_torchao_import_noise)
