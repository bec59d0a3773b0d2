"""A DSPy adapter small models can follow: `Field: value` lines instead of `[[ ## field ## ]]`.

DSPy's ChatAdapter asks for `[[ ## answer ## ]]` section markers and falls back to JSON; a
135M–1.5B chat model rarely writes either zero-shot (the 135M student answers a marker prompt
with Python code), so every call of an unoptimized program fails to parse and the optimizers
have no successful trace to start from. `FieldAdapter` renders each field as one labelled
block, the way people write forms:

    system:    Given `question`, produce `answer`.
               <the signature's instructions>
               Reply as:
               Answer: <answer>
    user:      Question: What is 2 + 3?
    assistant: Answer: 5

and parses the reply back by those labels (case-insensitive, at the start of a line, `**bold**`
labels too). A reply with no label at all is the value of the last output field (the answer,
after a chain of thought's reasoning). A text field the reply leaves out is empty, so the metric
scores the reply (a wrong answer) instead of the call raising: DSPy's BootstrapFinetune stops
the whole fine-tuning step at one unparsable trace (`bootstrap_trace_data` cannot unpack a
failed prediction), which a small model always produces somewhere. `strict=True` raises
AdapterParseError for any missing field instead, as DSPy's adapters do; a typed field (int,
bool, ...) that is missing or unreadable always raises. There is no JSON fallback (the model
would not follow it either).

It subclasses ChatAdapter, so BootstrapFinetune turns its traces into chat records
(`{"messages": [...]}`), and the fine-tuned model learns this same format.
"""
from __future__ import annotations

import re
from typing import Any

import dspy
from dspy.adapters.utils import format_field_value, parse_value
from dspy.utils.exceptions import AdapterParseError


def label(name: str) -> str:
    """The label a field is written under: `search_query` -> `Search query`."""
    words = name.replace("_", " ").strip()
    return words[:1].upper() + words[1:]


def _label_pattern(names: list[str]) -> re.Pattern:
    alts = "|".join(re.escape(label(n)) for n in sorted(names, key=len, reverse=True))
    return re.compile(rf"^[ \t>#*_-]*(?:\*\*)?({alts})(?:\*\*)?[ \t]*:(?:\*\*)?[ \t]*",
                      re.IGNORECASE | re.MULTILINE)


def _desc(name: str, info) -> str:
    """A field's description when it has one of its own (DSPy's default is `${name}`)."""
    desc = (info.json_schema_extra or {}).get("desc") or ""
    return name if not desc or desc == f"${{{name}}}" else desc


class FieldAdapter(dspy.ChatAdapter):
    """`Field: value` formatting and parsing (see the module docstring)."""

    def __init__(self, callbacks=None, strict: bool = False):
        super().__init__(callbacks=callbacks, use_json_adapter_fallback=False)
        self.strict = strict

    # -- formatting -------------------------------------------------------------------------

    def format_field_description(self, signature) -> str:
        ins = ", ".join(f"`{n}`" for n in signature.input_fields)
        outs = ", ".join(f"`{n}`" for n in signature.output_fields)
        return f"Given {ins}, produce {outs}."

    def format_field_structure(self, signature) -> str:
        lines = [f"{label(n)}: <{_desc(n, info)}>" for n, info in signature.output_fields.items()]
        return "Reply as:\n" + "\n".join(lines)

    def format_task_description(self, signature) -> str:
        return (signature.instructions or "").strip()

    def format_system_message(self, signature) -> str:
        parts = [self.format_field_description(signature), self.format_task_description(signature),
                 self.format_field_structure(signature)]
        return "\n".join(p for p in parts if p)

    def _fields(self, fields: dict, values: dict[str, Any], missing=None) -> str:
        out = []
        for name, info in fields.items():
            if name not in values and missing is None:
                continue
            value = values.get(name, missing)
            text = format_field_value(field_info=info, value=value).strip()
            sep = "\n" if "\n" in text else " "
            out.append(f"{label(name)}:{sep}{text}")
        return "\n".join(out)

    def format_user_message_content(self, signature, inputs, prefix: str = "", suffix: str = "",
                                    main_request: bool = False) -> str:
        parts = [prefix, self._fields(signature.input_fields, inputs), suffix]
        if main_request:  # the reminder small models need zero-shot (demos show it too)
            outs = " then ".join(f"`{label(n)}:`" for n in signature.output_fields)
            parts.append(f"Reply with {outs}.")
        return "\n\n".join(p for p in parts if p).strip()

    def format_assistant_message_content(self, signature, outputs, missing_field_message=None) -> str:
        return self._fields(signature.output_fields, outputs,
                            missing=missing_field_message or "Not supplied.")

    # -- parsing ----------------------------------------------------------------------------

    def parse(self, signature, completion: str) -> dict[str, Any]:
        names = list(signature.output_fields)
        text = completion or ""
        found: dict[str, str] = {}
        marks = [(m.start(), m.end(), m.group(1).lower()) for m in _label_pattern(names).finditer(text)]
        by_label = {label(n).lower(): n for n in names}
        for i, (_, end, lab) in enumerate(marks):
            nxt = marks[i + 1][0] if i + 1 < len(marks) else len(text)
            name = by_label[lab]
            if name not in found:
                found[name] = text[end:nxt].strip()
        if not found and text.strip():  # no label at all: the reply is the last field
            found[names[-1]] = text.strip()
        if not self.strict:  # text fields left out are empty: the metric scores the reply
            for n in names:
                if n not in found and signature.output_fields[n].annotation is str:
                    found[n] = ""
        missing = [n for n in names if n not in found]
        if missing:
            raise AdapterParseError(adapter_name="FieldAdapter", signature=signature,
                                    lm_response=completion, parsed_result=found,
                                    message=f"no {', '.join(label(n) + ':' for n in missing)} "
                                            "line in the reply")
        out = {}
        for name in names:
            try:
                out[name] = parse_value(found[name], signature.output_fields[name].annotation)
            except (ValueError, TypeError) as e:
                raise AdapterParseError(adapter_name="FieldAdapter", signature=signature,
                                        lm_response=completion, parsed_result=found,
                                        message=f"{label(name)}: cannot read {found[name]!r} ({e})")
        return out
