"""Data formats (messages, prompt/completion, alpaca, + optional explanation), validated."""
from .formats import ROLES, load_examples, save_examples, to_messages, validate_record

__all__ = ["ROLES", "load_examples", "save_examples", "to_messages", "validate_record"]
