"""Configuration of the tone-of-voice study: the recipe (`Config`), and one dataclass per stage
holding exactly what that stage reads (its cache key)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..lm.config import BackendConfig
from ..synth.simulate import ToneSpec
from ..train.config import TuneConfig


@dataclass
class SplitConfig:
    """How the corpus is split, by passage, so no passage is seen in training and evaluation."""

    eval_questions: int = 24
    """Held-out questions for the final comparison."""
    val_questions: int = 12
    """Validation questions for the convergence curves (tone rate during training)."""
    train_questions: int = 130
    """Questions to simulate answers for (candidates; filters then drop some)."""


@dataclass
class FilterConfig:
    """Thresholds of the simulated-data filters."""

    min_words: int = 5
    max_copy: float = 0.5
    """Max share of the answer's 8-grams copied verbatim from the passage."""
    min_topic_sim: float = 0.3
    """Min MiniLM cosine between answer and passage."""
    min_tone: float = 0.5
    """Min classifier-judge probability of being in tone."""
    max_dup_sim: float = 0.95
    """Max cosine to an already kept answer."""


@dataclass
class Config:
    name: str = "tone"
    """Run name: outputs go to runs/<name>/."""
    corpus: str = "corpora/tone/passages.jsonl"
    """Passages with questions and neutral reference answers (JSONL)."""
    calibration: str = "corpora/tone/calibration.jsonl"
    """Labeled texts (label 1 = in tone) to train and calibrate the judges."""
    labeled_outputs: str = ""
    """Model outputs labeled by hand (in tone, content correct, degenerate) on which every judge
    and check is measured ("" = none). They must be labeled for *this* tone: the shipped
    corpora/tone/labeled_outputs.jsonl is for the default one (recipes/tone*.yaml set it)."""
    tone: ToneSpec = field(default_factory=ToneSpec)
    """The target tone."""
    student: str = "smollm2-135m-instruct"
    """The model to tune."""
    teacher: BackendConfig = field(default_factory=BackendConfig)
    """Simulates the training data; also a system in the comparison."""
    judge: BackendConfig = field(default_factory=lambda: BackendConfig(model="smollm2-135m-instruct"))
    """The LLM tone judge's model."""
    judge_calibration_limit: int = 0
    """Calibrate the LLM judge on the first N labeled texts (0 = all)."""
    split: SplitConfig = field(default_factory=SplitConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    teacher_source: Literal["answer", "passage"] = "answer"
    """Facts the teacher restyles: the neutral reference answer (short prompts, fast) or the passage."""
    context: Literal["none", "passage"] = "none"
    """What the student sees besides the question: nothing, or the source passage."""
    train_sizes: list[int] = field(default_factory=lambda: [100])
    """Numbers of simulated examples N to tune on (each gets its own adapter)."""
    precisions: list[str] = field(default_factory=lambda: ["fp32"])
    """Precisions to tune at (fp32, bf16, int8); the first is the main one."""
    main_size: int = 100
    """The N whose adapter is compared side by side with the other systems."""
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(epochs=2, batch_size=4, lr=3e-4,
                                                                 save_every=5))
    """LoRA settings shared by every (N, precision)."""
    seeds: list[int] = field(default_factory=list)
    """Seeds of the tune sweep: every (N, precision) is tuned once per seed, and the curves
    stage averages the validation curves over them, with intervals. [] = just `seed`. With
    several seeds the tune stages are named `tune-<precision>-n<N>-s<seed>`; the main adapter
    (the one `evaluate` compares head to head) is the first seed's; `evaluate` also rates every
    other adapter on the held-out questions, one answer pass each."""
    curve_every: int = 10
    """Validation curve: every this many steps (and at step 0 and the last step), the student
    answers the validation questions and the rate of "in tone and content preserved" (the
    verdict classifier says in tone and the content check passes) and the tone rate are
    recorded (0 = no curves)."""
    compare: bool = True
    """Run the `evaluate` stage (every system head to head on the held-out questions). False
    leaves it out: a convergence-only run (split, judges, simulate, tune, curves, report), as in
    recipes/tone-precision.yaml."""
    max_new_tokens: int = 80
    """Answer length for simulation and evaluation."""
    eval_batch_size: int = 24
    """Student batch size for evaluation (bigger batches decode much faster on CPU)."""
    teacher_temperature: float = 0.7
    """Sampling temperature of the simulation."""
    content_threshold: float = 0.85
    """Content preserved: MiniLM cosine to the reference answer at least this (and not degenerate).
    0.85 was the most accurate threshold on corpora/tone/labeled_outputs.jsonl (0.79, against 0.77
    for answering "no" every time): similarity cannot tell a wrong fact from a right one, and the
    validate stage reports how far to trust it."""
    larger: list[BackendConfig] = field(default_factory=list)
    """Larger models compared with the system prompt plus the demos (few-shot), e.g. the
    packaged 0.5B and 1.5B: the "prompted larger model" baseline."""
    seed: int = 0

    def __post_init__(self) -> None:
        for p in self.precisions:
            if p not in ("fp32", "bf16", "int8"):
                raise ValueError(f"precisions: expected fp32/bf16/int8, got {p!r}")
        if not self.train_sizes or min(self.train_sizes) < 1:
            raise ValueError("train_sizes: expected positive sizes")
        if self.main_size not in self.train_sizes:
            raise ValueError(f"main_size {self.main_size} is not in train_sizes {self.train_sizes}")
        if not self.precisions:
            raise ValueError("precisions: expected at least one")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds: listed twice in {self.seeds}")

    @property
    def tune_seeds(self) -> list[int]:
        """The sweep's seeds: `seeds`, or just `seed`."""
        return list(self.seeds) or [self.seed]


# -- what each stage receives (built from Config by tone.stages) ----------------------------
@dataclass
class SplitStage:
    split: SplitConfig
    seed: int


@dataclass
class JudgesStage:
    description: str
    contrast: str
    judge: BackendConfig
    calibration_limit: int
    seed: int


@dataclass
class SimulateStage:
    tone: ToneSpec
    """With `contrast` blanked: it is the LLM judge's, the teacher never sees it."""
    teacher: BackendConfig
    filters: FilterConfig
    max_new_tokens: int
    temperature: float
    teacher_source: str
    context: str
    seed: int


@dataclass
class CurveStage:
    """What the validation curve reads while a tune stage trains."""

    context: str
    max_new_tokens: int
    content_threshold: float
    """The content check's threshold (as in `evaluate`)."""


@dataclass
class TuneStage:
    tune: TuneConfig
    """The LoRA settings, with model, precision, seed and eval_every filled in."""
    n: int
    curve: CurveStage | None
    """None when no curve is drawn (curve_every = 0)."""
    seed: int


@dataclass
class EvaluateStage:
    student: str
    eval_batch_size: int
    context: str
    tone: ToneSpec
    teacher: BackendConfig
    teacher_source: str
    teacher_temperature: float
    judge: BackendConfig
    larger: list[BackendConfig]
    content_threshold: float
    max_new_tokens: int
    main_adapter: str
    adapters: list[str]
    seed: int


@dataclass
class CurveAdapter:
    """One tune stage whose validation curve the curves stage reads."""

    name: str
    precision: str
    n: int
    seed: int


@dataclass
class CurvesStage:
    adapters: list[CurveAdapter]
    main_size: int
    """The N whose curves the convergence verdict compares across precisions."""
    reference: str
    """The precision whose final mean rate is the target the others are timed to (the first)."""
    seed: int
    """Of the bootstrap over seeds."""


@dataclass
class ValidateStage:
    description: str
    contrast: str
    judge: BackendConfig
    content_threshold: float
    seed: int
