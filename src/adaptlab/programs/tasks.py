"""The three tasks of the BetterTogether study (Soylu et al. 2024), offline: each a loader of
`dspy.Example`s, a DSPy program, the metric the optimizers use and the scores a report shows.

- multihop: two-hop questions over the fictional world of `adaptlab.data.multihop` (HotPotQA's
  stand-in). `MultiHop`: write a query, retrieve (BM25), write a second query from what came
  back, retrieve again, answer. Metric: exact match; F1 and retrieval recall are reported too.
- wordproblems: templated arithmetic of `adaptlab.data.wordproblems` (GSM8K's stand-in), with
  `dspy.ChainOfThought("question -> answer")`. Metric: the reply's last number is the answer.
- iris: `adaptlab.data.iris` as text classification with `dspy.Predict(ClassifyIris)`.
  Metric: the reply names the right species, and only it.

DSPy is imported when a program or an example is made, not at `import adaptlab.programs.tasks`
(the `programs` extra is optional); `MultiHop` and `ClassifyIris` are built on first access.
The multi-hop world is the shipped one (corpora/multihop, `multihop.generate()` with its
defaults, seed 0) whatever the seed: `load`'s seed only draws the split, and splits are grouped
by a question's subject entity, so no subject is asked about in two splits. The word problems
are drawn afresh from the seed; Iris splits are stratified.
"""
from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ..data import iris, multihop, wordproblems
from ..errors import require
from ..evaluate import qa
from .retrieve import BM25Retriever

K = 3  # passages per retrieval hop
WORLD_SEED = 0


@dataclass(frozen=True)
class Task:
    name: str
    inputs: tuple[str, ...]
    """The example fields a program reads; the rest are labels."""
    load: Callable[..., tuple[list, list, list]]
    """load(seed=0, n_train=..., n_val=..., n_test=...) -> (train, val, test) of dspy.Example."""
    program: Callable[[], Any]
    """A fresh, unoptimized dspy.Module."""
    metric: Callable[..., float]
    """metric(example, pred, trace=None) -> 1.0 or 0.0: what the optimizers maximize."""
    scores: Callable[[Any, Any], dict]
    """scores(example, pred) -> every measure of one prediction, the metric's first."""
    answer: str = "answer"
    """The program's final output field (what the metric reads)."""


def _dspy():
    return require("dspy", "programs")


def _field(pred: Any, name: str) -> str:
    """A prediction's output field as text; "" when the program failed to produce it."""
    value = pred.get(name) if isinstance(pred, dict) else getattr(pred, name, None)
    return "" if value is None else str(value)


def _examples(records: Sequence[dict], inputs: tuple[str, ...]) -> list:
    dspy = _dspy()
    return [dspy.Example(**r).with_inputs(*inputs) for r in records]


def _sizes(n_train: int, n_val: int, n_test: int) -> tuple[int, int, int]:
    for name, v in (("n_train", n_train), ("n_val", n_val), ("n_test", n_test)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
    return n_train, n_val, n_test


# -- the programs (classes made on first use: they subclass DSPy's) -------------------------

@functools.lru_cache(maxsize=1)
def _classes() -> dict[str, type]:
    dspy = _dspy()

    class MultiHop(dspy.Module):
        """Query, retrieve, query again with what was found, retrieve, answer."""

        def __init__(self, retriever: Callable[[str, int], list[str]], k: int = K):
            super().__init__()
            self.retriever, self.k = retriever, k
            self.hop1 = dspy.Predict("question -> search_query")
            self.hop2 = dspy.Predict("question, context -> search_query")
            self.generate_answer = dspy.Predict("question, context -> answer")

        def forward(self, question: str):
            query1 = self.hop1(question=question).search_query
            context = list(self.retriever(str(query1), self.k))
            query2 = self.hop2(question=question, context=context).search_query
            context += [p for p in self.retriever(str(query2), self.k) if p not in context]
            answer = self.generate_answer(question=question, context=context).answer
            return dspy.Prediction(answer=answer, context=context, queries=[query1, query2])

    class ClassifyIris(dspy.Signature):
        """Name the species of an iris flower from its measurements."""

        features: str = dspy.InputField(desc="sepal and petal length and width, in cm")
        species: str = dspy.OutputField(desc="one of: setosa, versicolor, virginica")

    for cls in (MultiHop, ClassifyIris):
        cls.__module__, cls.__qualname__ = __name__, cls.__name__
    return {"MultiHop": MultiHop, "ClassifyIris": ClassifyIris}


def __getattr__(name: str):
    if name in ("MultiHop", "ClassifyIris"):
        return _classes()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- multihop ---------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def world() -> tuple[list[dict], list[dict]]:
    """(pages, questions) of the shipped multi-hop world."""
    return multihop.generate(seed=WORLD_SEED)


@functools.lru_cache(maxsize=1)
def retriever() -> BM25Retriever:
    """BM25 over the world's pages, built once per process."""
    return BM25Retriever(world()[0], k=K)


def grouped_split(records: Sequence[dict], key: Callable[[dict], str], sizes: Sequence[int],
                  seed: int) -> list[list[dict]]:
    """Disjoint parts of exactly `sizes` records, no group (same key) in two parts; seeded."""
    groups: dict[str, list[dict]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    rng = random.Random(seed)
    order = rng.sample(list(groups), len(groups))
    parts: list[list[dict]] = [[] for _ in sizes]
    for g in order:
        for part, n in zip(parts, sizes):
            if len(part) + len(groups[g]) <= n:
                part.extend(groups[g])
                break
    if any(len(p) < n for p, n in zip(parts, sizes)):
        raise ValueError(f"cannot draw {tuple(sizes)} of {len(records)} records without "
                         f"splitting a group; ask for fewer")
    for part in parts:
        rng.shuffle(part)
    return parts


def _load_multihop(seed: int = 0, n_train: int = 100, n_val: int = 50, n_test: int = 100):
    sizes = _sizes(n_train, n_val, n_test)
    parts = grouped_split(world()[1], lambda q: q["supporting"][0], sizes, seed)
    train, val, test = (_examples(p, ("question",)) for p in parts)
    return train, val, test


def _multihop_program():
    return _classes()["MultiHop"](retriever(), k=K)


def _titles(context: Any) -> set[str]:
    passages = context if isinstance(context, (list, tuple)) else [context] if context else []
    return {str(p).split(" | ", 1)[0] for p in passages}


def multihop_scores(example, pred) -> dict:
    answer = _field(pred, "answer")
    got = _titles(pred.get("context") if isinstance(pred, dict) else getattr(pred, "context", None))
    supporting = list(example.supporting)
    return {"em": qa.exact_match(answer, example.answer), "f1": qa.f1(answer, example.answer),
            "recall": sum(t in got for t in supporting) / len(supporting)}


def multihop_metric(example, pred, trace=None) -> float:
    return qa.exact_match(_field(pred, "answer"), example.answer)


# -- word problems ----------------------------------------------------------------------------

def _load_wordproblems(seed: int = 0, n_train: int = 100, n_val: int = 50, n_test: int = 100):
    """Gold solutions ride along as `reasoning`, the field ChainOfThought writes, so labeled
    demos show a worked solution."""
    sizes = _sizes(n_train, n_val, n_test)
    problems = wordproblems.generate(sum(sizes), seed=seed) if sum(sizes) else []
    records = [{"id": p["id"], "question": p["question"], "reasoning": p["steps"],
                "answer": p["answer"], "n_steps": p["n_steps"]} for p in problems]
    cut = (sizes[0], sizes[0] + sizes[1])
    parts = records[:cut[0]], records[cut[0]:cut[1]], records[cut[1]:]
    train, val, test = (_examples(p, ("question",)) for p in parts)
    return train, val, test


def _wordproblems_program():
    return _dspy().ChainOfThought("question -> answer")


def wordproblems_scores(example, pred) -> dict:
    got = qa.extract_number(_field(pred, "answer"))
    return {"correct": float(got is not None and got == int(example.answer)),
            "parsed": float(got is not None)}


def wordproblems_metric(example, pred, trace=None) -> float:
    return wordproblems_scores(example, pred)["correct"]


# -- iris -------------------------------------------------------------------------------------

def _load_iris(seed: int = 0, n_train: int = 60, n_val: int = 30, n_test: int = 60):
    parts = iris.split(*_sizes(n_train, n_val, n_test), seed=seed)
    records = [[{"id": e["id"], "features": e["features"], "species": e["species"]} for e in p]
               for p in parts]
    train, val, test = (_examples(p, ("features",)) for p in records)
    return train, val, test


def _iris_program():
    return _dspy().Predict(_classes()["ClassifyIris"])


def iris_scores(example, pred) -> dict:
    got = qa.species(_field(pred, "species"))
    return {"accuracy": float(got == example.species), "valid": float(got is not None)}


def iris_metric(example, pred, trace=None) -> float:
    return iris_scores(example, pred)["accuracy"]


TASKS: dict[str, Task] = {
    "multihop": Task("multihop", ("question",), _load_multihop, _multihop_program,
                     multihop_metric, multihop_scores),
    "wordproblems": Task("wordproblems", ("question",), _load_wordproblems,
                         _wordproblems_program, wordproblems_metric, wordproblems_scores),
    "iris": Task("iris", ("features",), _load_iris, _iris_program, iris_metric, iris_scores,
                 "species"),
}


def constant_answer(task: Task, train: Sequence) -> str:
    """The most common gold answer in `train` (the first of the tied ones): what a program that
    gives one answer to everything would best give, a reference for the optimized programs."""
    from collections import Counter

    counts = Counter(str(ex.get(task.answer)) for ex in train)
    return max(counts, key=counts.get) if counts else ""


def get(name: str) -> Task:
    """The task called `name`; ValueError listing the tasks otherwise."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {', '.join(TASKS)}")
    return TASKS[name]
