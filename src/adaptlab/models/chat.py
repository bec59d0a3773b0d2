"""The one chat-template path: chats -> token ids, used by generation, scoring and training."""
from __future__ import annotations

from typing import Sequence

# For base models with no chat template (e.g. gemma-3-270m): a plain transcript format.
PLAIN_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% elif m['role'] == 'user' %}User: {{ m['content'] }}\n"
    "{% else %}Assistant: {{ m['content'] }}{{ eos_token }}\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def ensure_template(tok) -> None:
    if not getattr(tok, "chat_template", None):
        tok.chat_template = PLAIN_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token


def render_ids(tok, messages: Sequence[dict], add_generation_prompt: bool) -> list[int]:
    """Token ids of `messages` through the tokenizer's chat template."""
    text = tok.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return tok(text, add_special_tokens=False).input_ids


def stop_token_ids(tok, model_config=None) -> list[int]:
    """EOS plus the end-of-turn token of chat templates that have one."""
    ids = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    for t in ("<|im_end|>", "<|endoftext|>", "<end_of_turn>", "<|eot_id|>"):
        i = tok.convert_tokens_to_ids(t)
        if isinstance(i, int) and i >= 0 and i != tok.unk_token_id:
            ids.add(i)
    return sorted(ids)


def assistant_labels(tok, messages: Sequence[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) with loss only on assistant turns (labels -100 elsewhere)."""
    ids: list[int] = []
    labels: list[int] = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = render_ids(tok, messages[:i], add_generation_prompt=True)
        full = render_ids(tok, messages[: i + 1], add_generation_prompt=False)
        if full[: len(prefix)] != prefix:
            raise ValueError("chat template is not prefix-consistent; cannot mask non-assistant turns")
        labels += [-100] * (len(prefix) - len(ids)) + full[len(prefix):]
        ids = full
    # Tokens after the last assistant turn (none in valid data) get no loss.
    labels += [-100] * (len(ids) - len(labels))
    return ids, labels
