"""Configuration of the explanations study: the recipe (`Config`), and one dataclass per stage
holding exactly what that stage reads (its cache key)."""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..train.config import TuneConfig

LEVELS = ("none", "short", "medium", "long")
"""What a training target carries: the answer only, or an explanation of this detail before it."""
ALL_OPS = ("MIN", "MAX", "MED", "SM")


@dataclass
class TaskSpec:
    """One ListOps task: the shape of its expressions (data.listops generates them)."""

    name: str = "listops"
    """The task's name in stage names and tables (letters, digits, '-')."""
    depth: int = 2
    """Deepest nesting in training and test expressions (1 = one operator over digits)."""
    classes: int = 10
    """K: the answer classes (SM is the sum mod K); 30 as in Explained-ListOps-30."""
    min_args: int = 2
    max_args: int = 4
    ops: list[str] = field(default_factory=lambda: list(ALL_OPS))
    """Operators: MIN, MAX, MED (median), SM (sum mod K). ["SM"] is the modular-sum task."""
    deeper: int = 60
    """Test expressions exactly one level deeper than any in training (generalization; 0 = none)."""
    levels: list[str] = field(default_factory=list)
    """This task's explanation levels ([] = the study's `levels`)."""
    train_sizes: list[int] = field(default_factory=list)
    """This task's training-set sizes ([] = the study's `train_sizes`)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", self.name):
            raise ValueError(f"tasks: name {self.name!r}: use lowercase letters, digits and '-'")
        bad = [o for o in self.ops if o not in ALL_OPS]
        if bad or not self.ops:
            raise ValueError(f"tasks[{self.name}].ops: expected some of {', '.join(ALL_OPS)}, got {self.ops}")
        if self.depth < 1 or self.classes < 2 or not 1 <= self.min_args <= self.max_args:
            raise ValueError(f"tasks[{self.name}]: need depth >= 1, classes >= 2 and "
                             "1 <= min_args <= max_args")
        if self.deeper < 0:
            raise ValueError(f"tasks[{self.name}].deeper must be >= 0")
        _check_grid(self.levels, self.train_sizes, f"tasks[{self.name}].", allow_empty=True)


def _check_grid(levels: list[str], sizes: list[int], where: str, allow_empty: bool = False) -> None:
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not (levels or allow_empty):
        raise ValueError(f"{where}levels: expected some of {', '.join(LEVELS)}, got {levels}")
    if (not sizes and not allow_empty) or (sizes and min(sizes) < 1):
        raise ValueError(f"{where}train_sizes: expected positive sizes, got {sizes}")


def _tasks() -> list[TaskSpec]:
    return [TaskSpec("listops"), TaskSpec("modsum", ops=["SM"], deeper=0)]


@dataclass
class Config:
    name: str = "explain"
    """Run name: outputs go to runs/<name>/."""
    tasks: list[TaskSpec] = field(default_factory=_tasks)
    """The tasks, each trained and tested on its own: by default ListOps over all four operators,
    and the modular-sum task (SM only), where the paper found every model at chance without
    explanations."""
    models: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct"])
    """Students: packaged names, local directories or hub ids."""
    levels: list[str] = field(default_factory=lambda: list(LEVELS))
    """Explanation levels trained on: none (the answer only), short, medium, long."""
    train_sizes: list[int] = field(default_factory=lambda: [100, 300])
    """Training-set sizes N (each (task, model, level, N, seed) gets its own tuning run)."""
    seeds: list[int] = field(default_factory=list)
    """Seeds of the tuning sweep ([] = just `seed`); accuracies are then averaged over seeds."""
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(epochs=2, batch_size=8, lr=1e-3,
                                                                 warmup_steps=5, save_every=10,
                                                                 max_length=768))
    """Tuning settings shared by every run; `method: full` trains every weight (as the paper
    fine-tuned whole T5 models), `lora` adapters."""
    test_n: int = 100
    """Held-out test expressions per task (same depth as training)."""
    val_n: int = 24
    """Validation expressions for the curve during training."""
    curve_every: int = 0
    """Every this many optimizer steps (and at 0 and the last), the student answers the
    validation expressions and the accuracy is logged: steps to the threshold (0 = no curve)."""
    threshold: float = 0.5
    """The accuracy whose first reaching is reported (examples N, and steps with a curve)."""
    few_shot: int = 3
    """Demos in the prompting baselines (0 = no baselines)."""
    baselines: list[str] = field(default_factory=lambda: ["few_shot", "few_shot_explained"])
    """Prompting baselines: few_shot (answer-only demos) and few_shot_explained (demos with the
    long explanation, i.e. chain of thought)."""
    eval_batch_size: int = 64
    """Decode slots for evaluation."""
    seed: int = 0

    def __post_init__(self) -> None:
        _check_grid(self.levels, self.train_sizes, "")
        if not self.models or not self.tasks:
            raise ValueError("models and tasks: expected at least one each")
        names = [t.name for t in self.tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"tasks: names must be unique, got {names}")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: listed twice in {self.seeds}")
        if self.test_n < 1 or self.val_n < 0 or self.curve_every < 0 or self.few_shot < 0:
            raise ValueError("test_n must be >= 1; val_n, curve_every and few_shot >= 0")
        if self.curve_every and not self.val_n:
            raise ValueError("curve_every > 0 needs val_n > 0 validation expressions")
        if not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if set(self.baselines) - {"few_shot", "few_shot_explained"}:
            raise ValueError(f"baselines: expected few_shot and/or few_shot_explained, got {self.baselines}")
        tags = [model_tag(m) for m in self.models]
        if len(set(tags)) != len(tags):
            raise ValueError(f"models: two of {self.models} would share a stage name")
        if self.tune.method == "prompt":
            raise ValueError("tune.method: this study trains lora or full (prompt tuning is not "
                             "evaluated here)")
        if "The answer is {answer}" not in self.tune.explanation_template:
            raise ValueError("tune.explanation_template must contain 'The answer is {answer}' "
                             "(that is where the evaluation reads the answer)")

    @property
    def tune_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed]

    def grid(self, task: TaskSpec) -> tuple[list[str], list[int]]:
        """A task's levels and training-set sizes (its own, else the study's)."""
        return task.levels or self.levels, task.train_sizes or self.train_sizes


def model_tag(ref: str) -> str:
    """A model reference as a stage-name part: `smollm2-135m-instruct`, `org-name` for hub ids."""
    return re.sub(r"[^a-z0-9.]+", "-", ref.lower().rstrip("/").split("/", 1)[-1]).strip("-")


# -- what each stage receives (built from Config by explain.stages) -------------------------
@dataclass
class DataStage:
    task: TaskSpec
    train_n: int
    sizes: list[int]
    """The Ns of the task's grid: one train-n<N>.jsonl each (the first N training rows)."""
    val_n: int
    test_n: int
    seed: int


@dataclass
class TuneStage:
    tune: TuneConfig
    """With model, target, seed and eval_every filled in."""
    task: str
    level: str
    n: int
    seed: int


@dataclass
class Run:
    """One tuning run the evaluation reads."""

    name: str
    model: str
    level: str
    n: int
    seed: int


@dataclass
class EvaluateStage:
    task: str
    models: list[str]
    runs: list[Run]
    few_shot: int
    baselines: list[str]
    eval_batch_size: int
    threshold: float
    method: str
    template: str
    """The explained target's template (training's), for the demos and the token budgets."""
    device: str
    seed: int


@dataclass
class SummaryStage:
    tasks: list[str]
    threshold: float
