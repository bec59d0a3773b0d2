"""Simulate training data: a teacher turns (passage, question) into an answer in the target tone.

Generation is journaled answer by answer (each chunk of items with its own seed), so a killed run
resumes where it stopped and produces exactly what an uninterrupted run would.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .. import progress
from ..io import append_jsonl, read_journal
from ..lm.base import GenParams, chat_each


@dataclass
class Demo:
    """One worked example of the tone: a question, neutral facts, and the answer in the tone."""

    question: str
    facts: str = ""
    answer: str = ""


@dataclass
class ToneSpec:
    """The target tone: a description, optional examples and counter-examples."""

    description: str = (
        "natural, spoken and conversational, the way a friendly voice assistant talks: short "
        "sentences, contractions, speaks to the listener as \"you\", warm, no lists, no markdown, "
        "no headings"
    )
    """What the tone is, in one or two sentences."""
    contrast: str = (
        "formal written reference style, like an encyclopedia, textbook or document; may use "
        "lists, headings and markdown"
    )
    """What the tone is not (used by the LLM judge's contrastive scoring)."""
    examples: list[str] = field(default_factory=list)
    """Texts in the tone."""
    counter_examples: list[str] = field(default_factory=list)
    """Texts not in the tone."""
    demos: list[Demo] = field(default_factory=list)
    """Worked examples, given to the teacher as earlier chat turns (small teachers follow
    demonstrations far better than instructions)."""

    def system_prompt(self) -> str:
        """The tone as a system prompt, for teachers and for the prompted baseline."""
        parts = [f"You are a voice assistant. Always answer in this tone: {self.description}."]
        if self.examples:
            parts.append("Examples of the tone:\n" + "\n".join(f"- {e}" for e in self.examples))
        if self.counter_examples:
            parts.append("Never sound like this:\n" + "\n".join(f"- {e}" for e in self.counter_examples))
        return "\n\n".join(parts)


def _ask(question: str, facts: str | None) -> str:
    return f"Question: {question}\nFacts: {facts}" if facts is not None else question


def demo_turns(spec: ToneSpec, with_facts: bool) -> list[dict]:
    turns = []
    for d in spec.demos:
        turns += [{"role": "user", "content": _ask(d.question, d.facts if with_facts else None)},
                  {"role": "assistant", "content": d.answer}]
    return turns


def teacher_chat(spec: ToneSpec, facts: str, question: str) -> list[dict]:
    """System prompt, the demos as earlier turns, then the question with the facts to use."""
    system = spec.system_prompt() + ("\n\nAnswer from the facts given, in two to four short "
                                     "spoken sentences. Reply with the answer only.")
    return ([{"role": "system", "content": system}] + demo_turns(spec, with_facts=True)
            + [{"role": "user", "content": _ask(question, facts)}])


def simulate(items: Sequence[dict], teacher, spec: ToneSpec, params: GenParams, journal: Path,
             chunk: int = 16) -> list[dict]:
    """Answer every item ({id, facts, question}) with the teacher; resumable.

    Each answer is journaled as soon as the teacher hands it over: whole chunks from local models,
    one by one from teachers that answer each chat on its own (HTTP), so a failure part-way
    through a chunk keeps the answers already received. A chunk keeps its seed however it is
    resumed; local teachers are asked the whole chunk again (their outputs depend on the batch),
    others only its missing items.
    """
    done = {r["id"]: r for r in read_journal(journal)}
    todo = [it for it in items if it["id"] not in done]
    if done:
        progress.log(f"simulate: {len(done)} done earlier, {len(todo)} to go")
    chunks = [list(items[i : i + chunk]) for i in range(0, len(items), chunk)]
    with progress.bar(total=len(items), desc="simulate", unit="answer") as pb:
        pb.update(len(items) - len(todo))
        try:
            for k, ch in enumerate(chunks):
                if all(it["id"] in done for it in ch):
                    continue
                if getattr(teacher, "answers_each", False):
                    ch = [it for it in ch if it["id"] not in done]
                p = GenParams(**{**params.to_dict(), "stop": tuple(params.stop),
                                 "seed": params.seed + k})
                chats = [teacher_chat(spec, it["facts"], it["question"]) for it in ch]
                chat_each(teacher, chats, p, _journaler(ch, done, journal, pb))
        except BaseException:
            n = sum(it["id"] in done for it in items)
            progress.log(f"simulate: stopped with {n} of {len(items)} answers kept in {journal}; "
                         "run again to resume")
            raise
    return [done[it["id"]] for it in items]


def _journaler(chunk: list[dict], done: dict, journal: Path, pb):
    """on_result for one chunk: journal each new answer at once (fsynced) and mark it done."""
    def keep(i: int, text: str) -> None:
        if chunk[i]["id"] in done:
            return  # answered before a restart; the local teacher was asked its chunk again
        row = {**chunk[i], "simulated": text}
        append_jsonl(journal, [row])
        done[row["id"]] = row
        pb.update(1)
    return keep
