"""Data formats (messages, prompt/completion, alpaca, + optional explanation), validated."""
from .formats import (ROLES, load_examples, prompt_turns, read_records, save_examples, to_messages,
                      validate_record)

__all__ = ["ROLES", "load_examples", "prompt_turns", "read_records", "save_examples", "to_messages",
           "validate_record"]
