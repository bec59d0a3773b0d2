"""Configuration of the knowledge-intervention study: the recipe (`Config`), and one dataclass per
stage holding exactly what that stage reads (its cache key)."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..train.config import TuneConfig
from .explain_config import model_tag

BASE_SETS = ("harmonious", "incompatible", "self_aligning")


@dataclass
class Config:
    name: str = "knowledge"
    """Run name: outputs go to runs/<name>/."""
    questions: list[str] = field(default_factory=lambda: ["corpora/knowledge"])
    """Question sources: JSONL or MMLU-style CSV files, directories of them, or
    `hf:<dataset>[:<config>[:<split>]]` (online)."""
    train_domains: list[str] = field(default_factory=lambda: ["geography", "biology"])
    """Domains the instruction sets come from; their held-out questions are the HOMO split."""
    id_domains: list[str] = field(default_factory=lambda: ["world_history", "physical_science"])
    """Related domains (ID split)."""
    ood_domains: list[str] = field(default_factory=list)
    """Other domains (OOD split); [] = every domain not named above."""
    homo_n: int = 30
    """Held-out questions per training domain (HOMO); the rest of each is probed for the sets."""
    test_per_domain: int = 40
    """Questions per ID / OOD domain in the evaluation (0 = all of them)."""
    models: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    """Students: packaged names, local directories or hub ids. Each is probed, tuned and tested
    on its own knowledge."""
    shots: int = 5
    """Solved questions of the same domain in the probe's prompt (they are not probed)."""
    score_by: str = "texts"
    """texts: the cloze form, the question alone and the probability of each option's text as
    the reply, per character; letters: the options listed A-D and the probability of each letter
    as the reply's first token (the paper's MMLU form, at chance for students under ~1B). Tuning
    targets and the evaluation use the same form."""
    debias: str = "prior"
    """prior: divide each question's option probabilities by the model's mean probability of each
    position over the questions scored together (a probe domain, or the test questions), then
    renormalize (evaluate.mc.debias); small models pick one letter whatever the question, and
    this keeps what differs between questions. none: the raw probabilities, as the paper (7B
    models) used. Predictions, confidences and the consistency measures all use the result."""
    threshold: float = 0.4
    """A question counts as known when the probe answers it right with at least this probability
    (right but less sure: in neither set); unknown when it answers wrong."""
    set_size: int = 0
    """Questions per instruction set (0 = as many as the smaller of known and unknown allows);
    the sets are always the same size, so the comparison is fair."""
    max_set_size: int = 48
    """Cap on the automatic size."""
    ratios: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])
    """Shares of self-aligning data mixed into the incompatible set (0 = incompatible, 1 =
    self-aligning, between: that share of its questions take the model's own answer)."""
    explanations: bool = True
    """Targets carry an explanation after the answer (written by `explainer` for the answer the
    target gives: gold, or the model's own)."""
    explainer: str = "self"
    """Who writes the explanations: self (each student for its own sets, as the paper has the
    model explain its own answer) or a model reference used for every student."""
    explanation_tokens: int = 48
    """New tokens per explanation."""
    tune: TuneConfig = field(default_factory=lambda: TuneConfig(epochs=2, batch_size=8, lr=5e-4,
                                                                 warmup_steps=2, save_every=10,
                                                                 max_length=384))
    """Tuning settings shared by every set (`method: full` trains every weight)."""
    eval_batch_size: int = 32
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.models or not self.questions or not self.train_domains:
            raise ValueError("models, questions and train_domains: expected at least one each")
        named = self.train_domains + self.id_domains + self.ood_domains
        if len(set(named)) != len(named):
            raise ValueError("train_domains, id_domains and ood_domains: a domain is named twice")
        if self.score_by not in ("letters", "texts"):
            raise ValueError(f"score_by: expected letters or texts, got {self.score_by!r}")
        if self.debias not in ("none", "prior"):
            raise ValueError(f"debias: expected none or prior, got {self.debias!r}")
        if not 0 <= self.threshold <= 1:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not self.ratios or any(not 0 <= r <= 1 for r in self.ratios) or len(set(self.ratios)) != len(self.ratios):
            raise ValueError(f"ratios: expected distinct shares in [0, 1], got {self.ratios}")
        for k in ("homo_n", "shots", "max_set_size", "explanation_tokens", "eval_batch_size"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k} must be >= 1")
        if self.set_size < 0 or self.test_per_domain < 0:
            raise ValueError("set_size and test_per_domain must be >= 0")
        tags = [model_tag(m) for m in self.models]
        if len(set(tags)) != len(tags):
            raise ValueError(f"models: two of {self.models} would share a stage name")
        if self.tune.method == "prompt" or self.tune.target != "chat":
            raise ValueError("tune: this study trains method lora or full on target chat (the sets "
                             "carry their own targets)")

    def set_names(self) -> list[str]:
        """harmonious, then the mixtures in ratio order (0 is incompatible, 1 self-aligning)."""
        return ["harmonious", *(set_name(r) for r in sorted(self.ratios))]


def set_name(ratio: float) -> str:
    if ratio == 0:
        return "incompatible"
    if ratio == 1:
        return "self_aligning"
    return f"mix-{ratio:g}"


def ratio_of(name: str) -> float | None:
    """The self-aligning share of a set (None for harmonious and the base model)."""
    fixed = {"incompatible": 0.0, "self_aligning": 1.0}
    if name in fixed:
        return fixed[name]
    return float(name.removeprefix("mix-")) if name.startswith("mix-") else None


# -- what each stage receives (built from Config by knowledge.stages) -----------------------
@dataclass
class DataStage:
    questions: list[str]
    """With the sources' content hashes, so an edited file re-runs the split."""
    train_domains: list[str]
    id_domains: list[str]
    ood_domains: list[str]
    homo_n: int
    test_per_domain: int
    shots: int
    seed: int


@dataclass
class ProbeStage:
    model: str
    shots: int
    score_by: str
    debias: str
    batch_size: int
    device: str


@dataclass
class SetsStage:
    model: str
    form: str
    """The prompt form of the targets: the probe's score_by (data.mc FORMS)."""
    explainer: str
    """A model reference (`self` resolved)."""
    threshold: float
    set_size: int
    max_set_size: int
    ratios: list[float]
    explanations: bool
    explanation_tokens: int
    batch_size: int
    device: str
    seed: int


@dataclass
class TuneStage:
    tune: TuneConfig
    model: str
    set: str


@dataclass
class EvaluateStage:
    model: str
    sets: list[str]
    score_by: str
    debias: str
    method: str
    batch_size: int
    device: str
    seed: int


@dataclass
class SummaryStage:
    models: list[str]
    sets: list[str]
    seed: int
