"""Configuration of the SoftSRV study: the recipe (`Config`), and one dataclass per stage holding
exactly what that stage reads (its cache key)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from ..lm.config import BackendConfig
from ..synth.softsrv import KINDS, VARIATIONS, SoftPromptConfig
from ..train.config import TuneConfig

DOMAINS = ("code", "wordproblems", "boolq")
METHODS = ("fewshot", "fewshot-teacher", "softsrv-noncontextual", "softsrv-contextual",
           "softsrv-mixture")
"""fewshot: the hard-prompt template sampled from the frozen LM (the one the soft prompts are
trained on) as a plain text continuation; fewshot-teacher: the same template as a chat turn to
the teacher backend; softsrv-<kind>: a soft prompt of that kind trained on the fit targets."""
REFERENCE = "fewshot"
"""The hard-prompt baseline every other method is tested against (McNemar, paired by item)."""


def kind_of(method: str) -> str | None:
    """The soft prompt kind of a SoftSRV method; None for the hard-prompt ones."""
    return method.removeprefix("softsrv-") if method.startswith("softsrv-") else None


@dataclass
class Sizes:
    fit: int = 32
    """Targets the generators are trained on; also the few-shot pool and the memorization
    reference."""
    heldout: int = 24
    """Targets MAUVE compares each method's samples with (never trained on, never shown)."""
    test: int = 32
    """Downstream test items (the tuned students are scored on them)."""


DEFAULT_SIZES = {"code": Sizes(24, 16, 20), "wordproblems": Sizes(32, 24, 32),
                 "boolq": Sizes(32, 24, 32)}
DEFAULT_NEW_TOKENS = {"code": 176, "wordproblems": 128, "boolq": 176}
"""Sampling budget per synthetic sample (the longest targets in SmolLM2's tokens: code 170 for
problems of <= 500 characters, word problems 127, passage + question + answer 157)."""
DEFAULT_EVAL_TOKENS = {"code": 160, "wordproblems": 96, "boolq": 4}
"""The student's answer budget per test item (a function body, a worked answer, yes/no)."""


@dataclass
class Sampling:
    """How every method samples (the same for all, so they differ only in their prompt)."""

    temperature: float = 0.8
    """0 = greedy (every noncontextual sample would then be the same)."""
    top_p: float = 0.95
    variation: Literal["noise", "interpolate", "none"] = "noise"
    """SoftSRV contexts (contextual and mixture): a target's embedding plus noise, a point
    between two targets' embeddings, or a target's embedding as it is."""
    noise_scale: float = 0.5
    """Expected norm of the noise added to a unit context embedding (variation=noise)."""
    batch_size: int = 8
    """Samples decoded together."""

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < math.inf:
            raise ValueError(f"sampling.temperature: expected >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"sampling.top_p: expected in (0, 1], got {self.top_p}")
        if self.variation not in VARIATIONS:
            raise ValueError(f"sampling.variation: expected one of {', '.join(VARIATIONS)}, "
                             f"got {self.variation!r}")
        if not 0 <= self.noise_scale < math.inf:
            raise ValueError(f"sampling.noise_scale: expected >= 0, got {self.noise_scale}")
        if self.batch_size < 1:
            raise ValueError(f"sampling.batch_size: expected >= 1, got {self.batch_size}")


@dataclass
class MatchStep:
    """One adjustment of the distribution-matching loop; unset fields keep the previous round's
    value (adjustments accumulate)."""

    steps: int = 0
    """More generator training: this many optimizer steps on top of the current total (a fresh
    generator trained for the new total, so its warmup and decay span the whole run)."""
    temperature: float | None = None
    top_p: float | None = None
    variation: str | None = None
    noise_scale: float | None = None

    def __post_init__(self) -> None:
        if self.steps < 0:
            raise ValueError(f"match.schedule: steps must be >= 0, got {self.steps}")
        if self.variation is not None and self.variation not in VARIATIONS:
            raise ValueError(f"match.schedule: variation must be one of {', '.join(VARIATIONS)}, "
                             f"got {self.variation!r}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"match.schedule: temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"match.schedule: top_p must be in (0, 1], got {self.top_p}")
        if self.noise_scale is not None and self.noise_scale < 0:
            raise ValueError(f"match.schedule: noise_scale must be >= 0, got {self.noise_scale}")
        if not (self.steps or any(v is not None for v in (self.temperature, self.top_p,
                                                            self.variation, self.noise_scale))):
            raise ValueError("match.schedule: an adjustment that changes nothing")


def _default_schedule() -> list[MatchStep]:
    return [MatchStep(temperature=0.7), MatchStep(noise_scale=0.25), MatchStep(steps=20),
            MatchStep(variation="interpolate")]


@dataclass
class MatchConfig:
    """The distribution-matching loop: generate -> MAUVE vs heldout -> adjust, until the target
    MAUVE or the budget of rounds."""

    method: str = "softsrv-contextual"
    """The SoftSRV method to match ("" = no match stages); it must be one of `methods`."""
    target: float = 0.9
    """Stop at the first round whose MAUVE against heldout reaches this."""
    budget: int = 3
    """Rounds at most, the first one with the generate stage's settings; round r > 0 applies
    schedule[r - 1]."""
    schedule: list[MatchStep] = field(default_factory=_default_schedule)

    def __post_init__(self) -> None:
        if self.method and kind_of(self.method) not in KINDS:
            raise ValueError(f"match.method: expected a SoftSRV method (softsrv-<kind>) or \"\", "
                             f"got {self.method!r}")
        if not 0 < self.target <= 1:
            raise ValueError(f"match.target: MAUVE is in (0, 1], got {self.target}")
        if self.budget < 1:
            raise ValueError(f"match.budget: expected >= 1 round, got {self.budget}")
        if self.budget > len(self.schedule) + 1:
            raise ValueError(f"match.budget: {self.budget} rounds need {self.budget - 1} "
                             f"adjustments, the schedule has {len(self.schedule)}")


@dataclass
class Config:
    name: str = "softsrv"
    """Run name: outputs go to runs/<name>/."""
    domains: list[str] = field(default_factory=lambda: list(DOMAINS))
    """Any of code (HumanEval: prompt + canonical solution; pass@1 in the sandbox),
    wordproblems (templated arithmetic with worked answers; accuracy of the final number),
    boolq (passage, yes/no question, answer, over corpora/tone passages; accuracy)."""
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    """Any of fewshot, fewshot-teacher, softsrv-noncontextual, softsrv-contextual,
    softsrv-mixture. fewshot is the reference the others are tested against."""
    sizes: dict[str, Sizes] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    """Per domain: fit, heldout and test targets (disjoint, seeded)."""
    code_max_chars: int = 500
    """code: only HumanEval problems whose prompt + solution has at most this many characters
    (62 of 164 at 500, 118 at 700; 0 = all), so samples fit a CPU-sized token budget. The
    filter applies to the whole pool, test included: shorter problems are easier ones."""
    boolq_questions: str = "corpora/boolq/questions.jsonl"
    boolq_passages: str = "corpora/tone/passages.jsonl"
    parse_labels: str = "corpora/softsrv/parse-labels.jsonl"
    """Model-written samples, each labeled by reading it: is it a usable item of its domain
    (and is its content right)? The parse check is measured against them ("" = not measured)."""
    n_synthetic: int = 24
    """Samples each method generates in its first round (MAUVE, diversity and memorization are
    measured on exactly these, so on equal sets)."""
    max_rounds: int = 2
    """Generation budget: while fewer than n_synthetic samples parse, another round draws the
    shortfall (new seed), up to this many rounds."""
    min_train: int = 8
    """A method with fewer parsable samples than this is not tuned (reported as such); the
    others are all tuned on the same number of records: the smallest parsable count among
    them, each method's first records in sample order."""
    max_new_tokens: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_NEW_TOKENS))
    """Per domain: the sampling budget of a synthetic sample."""
    sampling: Sampling = field(default_factory=Sampling)
    shots: int = 3
    """Few-shot examples (fit targets, drawn per sample) in the hard-prompt template."""
    generator: SoftPromptConfig = field(default_factory=lambda: SoftPromptConfig(
        length=8, bases=4, hidden=128, steps=24, batch_size=4, lr=5e-3, warmup_steps=2,
        max_length=256))
    """The SoftSRV generators (one per domain and kind): `model` is the frozen LM (fewshot
    samples from it too); `kind` is set per method and ignored here; `seed` is the run's."""
    teacher: BackendConfig = field(default_factory=BackendConfig)
    """fewshot-teacher's LM (default the packaged qwen2.5-coder-0.5b-instruct, local)."""
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(
        epochs=2, batch_size=4, lr=3e-4, lora_r=8, lora_alpha=16, save_every=0))
    """The LoRA fine-tune of the student, the same for every method's set; `model` is the
    student (also evaluated untuned); its `seed` is the run's."""
    eval_max_new_tokens: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_EVAL_TOKENS))
    """Per domain: the student's answer budget (greedy)."""
    eval_batch_size: int = 16
    features: str = "minilm-l6"
    """The sentence embedding MAUVE is computed on."""
    mauve_buckets: int = 0
    """MAUVE's k-means buckets (0 = auto: max(2, n / 10))."""
    mauve_boot: int = 200
    """Bootstrap draws for MAUVE's 95% intervals and the paired differences against fewshot
    (0 = none)."""
    memorization_n: int = 8
    """Word n-grams a sample shares with a fit target to count as copied."""
    near: float = 0.5
    """Near-duplicate: at least this share of a sample's n-grams in one fit target."""
    match: MatchConfig = field(default_factory=MatchConfig)
    seed: int = 0

    def __post_init__(self) -> None:
        _choice("domains", self.domains, DOMAINS)
        _choice("methods", self.methods, METHODS)
        unknown = set(self.sizes) - set(DOMAINS)
        if unknown:
            raise ValueError(f"sizes: unknown domain {sorted(unknown)[0]}")
        for d in [x for x in DOMAINS if x in self.sizes or x in self.domains]:
            s = self.sizes.get(d, DEFAULT_SIZES[d])
            if isinstance(s, dict):
                unknown = set(s) - {"fit", "heldout", "test"}
                if unknown:
                    raise ValueError(f"sizes.{d}: unknown field {sorted(unknown)[0]} "
                                     "(expected fit, heldout, test)")
                s = Sizes(**{**DEFAULT_SIZES[d].__dict__, **s})
            self.sizes[d] = s
            if min(s.fit, s.heldout, s.test) < 1:
                raise ValueError(f"sizes.{d}: fit, heldout and test must be at least 1")
            if d in self.domains and self.shots > s.fit:
                raise ValueError(f"shots: {self.shots} few-shot examples, but sizes.{d}.fit is "
                                 f"{s.fit}")
        for name in ("max_new_tokens", "eval_max_new_tokens"):
            given = getattr(self, name)
            bad = set(given) - set(DOMAINS)
            if bad:
                raise ValueError(f"{name}: unknown domain {sorted(bad)[0]}")
            default = DEFAULT_NEW_TOKENS if name == "max_new_tokens" else DEFAULT_EVAL_TOKENS
            merged = {**default, **given}
            if any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in merged.values()):
                raise ValueError(f"{name}: expected positive token counts, got {given}")
            setattr(self, name, merged)
        if self.n_synthetic < 2:
            raise ValueError(f"n_synthetic: expected >= 2 (self-BLEU compares samples), "
                             f"got {self.n_synthetic}")
        for name in ("max_rounds", "min_train", "shots", "eval_batch_size", "memorization_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.min_train > self.n_synthetic:
            raise ValueError(f"min_train: {self.min_train} is more than n_synthetic "
                             f"({self.n_synthetic}): no method could be tuned")
        if self.mauve_boot < 0:
            raise ValueError(f"mauve_boot: expected >= 0, got {self.mauve_boot}")
        if self.mauve_buckets == 1 or self.mauve_buckets < 0:
            raise ValueError(f"mauve_buckets: expected 0 (auto) or >= 2, got {self.mauve_buckets}")
        if not 0 < self.near <= 1:
            raise ValueError(f"near: expected in (0, 1], got {self.near}")
        if self.code_max_chars < 0:
            raise ValueError(f"code_max_chars: expected >= 0, got {self.code_max_chars}")
        if self.tune.method != "lora":
            raise ValueError(f"tune.method: the study swaps LoRA adapters on one student; "
                             f"expected lora, got {self.tune.method!r}")
        if self.match.method and self.match.method not in self.methods:
            raise ValueError(f"match.method: {self.match.method} is not in methods "
                             f"({', '.join(self.methods)}); add it, or set match.method: \"\"")
        if self.generator.steps == 0:
            raise ValueError("generator.steps: set the generator's optimizer steps (> 0): the "
                             "match loop adds steps to it")

    def generator_for(self, kind: str) -> SoftPromptConfig:
        return replace(self.generator, kind=kind, seed=self.seed)

    def tune_config(self) -> TuneConfig:
        return replace(self.tune, seed=self.seed)


def _choice(name: str, got: list[str], allowed: tuple[str, ...]) -> None:
    bad = [x for x in got if x not in allowed]
    if bad or not got:
        raise ValueError(f"{name}: expected some of {', '.join(allowed)}, got {bad or '[]'}")
    if len(set(got)) != len(got):
        raise ValueError(f"{name}: listed twice in {got}")


# -- what each stage receives (built from Config by softsrv.stages) -------------------------
@dataclass
class DataStage:
    domain: str
    sizes: Sizes
    code_max_chars: int
    seed: int


@dataclass
class GeneratorStage:
    domain: str
    generator: SoftPromptConfig


@dataclass
class GenerateStage:
    domain: str
    method: str
    n: int
    max_rounds: int
    max_new_tokens: int
    sampling: Sampling
    shots: int
    frozen: str
    """The frozen LM (fewshot samples from it)."""
    teacher: BackendConfig | None
    """fewshot-teacher only."""
    device: str
    precision: str
    seed: int


@dataclass
class MetricsStage:
    domain: str
    methods: list[str]
    n: int
    min_train: int
    features: str
    mauve_buckets: int
    memorization_n: int
    near: float
    seed: int
    mauve_boot: int = 200


@dataclass
class TuneStage:
    domain: str
    method: str
    tune: TuneConfig


@dataclass
class EvaluateStage:
    domain: str
    methods: list[str]
    student: str
    max_new_tokens: int
    batch_size: int
    device: str
    seed: int


@dataclass
class MatchStage:
    domain: str
    method: str
    generator: SoftPromptConfig
    sampling: Sampling
    n: int
    max_new_tokens: int
    target: float
    budget: int
    schedule: list[MatchStep]
    features: str
    mauve_buckets: int
    seed: int


@dataclass
class ParseCheckStage:
    domains: list[str]


@dataclass
class TableStage:
    domains: list[str]
    methods: list[str]
    match: bool
    seed: int = 0
