"""Configuration of the BetterTogether study: the recipe (`Config`), and one dataclass per stage
holding exactly what that stage reads (its cache key)."""
from __future__ import annotations

from dataclasses import dataclass, field

STRATEGIES = ("vanilla", "p", "w", "p -> w", "w -> p", "p -> w -> p")
"""The paper's strategies; vanilla is the unoptimized program."""
TASK_NAMES = ("multihop", "wordproblems", "iris")


def chains(strategies: list[str]) -> list[str]:
    """The fewest optimizer chains whose prefixes cover `strategies`: BetterTogether keeps the
    program after every step of a chain, so "p -> w -> p" also yields "p" and "p -> w" (the same
    steps on the same shuffled data as when run alone)."""
    wanted = [s for s in strategies if s != "vanilla"]
    out: list[str] = []
    for s in sorted(wanted, key=lambda s: -len(s.split(" -> "))):
        if not any(c == s or c.startswith(s + " -> ") for c in out):
            out.append(s)
    return out


def chain_tag(chain: str) -> str:
    return chain.replace(" -> ", "")


@dataclass
class Sizes:
    train: int = 20
    val: int = 10
    test: int = 40


DEFAULT_SIZES = {"multihop": Sizes(8, 4, 16), "wordproblems": Sizes(16, 8, 32),
                 "iris": Sizes(24, 12, 36)}


@dataclass
class Config:
    name: str = "bettertogether"
    """Run name: outputs go to runs/<name>/."""
    tasks: list[str] = field(default_factory=lambda: list(TASK_NAMES))
    """Any of multihop (two-hop QA with BM25 over corpora/multihop), wordproblems (arithmetic
    with chain of thought), iris."""
    model: str = "smollm2-135m-instruct"
    """The student every module of the program runs on (served by adaptlab, tuned with LoRA)."""
    strategies: list[str] = field(default_factory=lambda: list(STRATEGIES))
    """Which of vanilla, p, w, p -> w, w -> p, p -> w -> p to report (p: bootstrapped few-shot
    demos with random search; w: LoRA on the program's own traces that pass the metric)."""
    seeds: list[int] = field(default_factory=lambda: [0])
    """Each seed draws the task's splits and shuffles the trainset between steps."""
    sizes: dict[str, Sizes] = field(default_factory=lambda: dict(DEFAULT_SIZES))
    """Per task: training, validation (the optimizers' and BetterTogether's selection) and test
    examples."""
    candidates: int = 1
    """BootstrapFewShotWithRandomSearch's random candidate programs (the paper: 6), on top of
    its zero-shot, labeled-only and unshuffled-bootstrap candidates."""
    max_demos: int = 3
    """Bootstrapped and labeled demos per module, at most (the paper: 3)."""
    lora_r: int = 16
    lora_alpha: int = 32
    """The paper: r = 32, alpha = 64."""
    epochs: int = 3
    """The paper: 5 epochs, lr 1e-5, batch 8 (7-8B models, hundreds of traces)."""
    lr: float = 3e-4
    batch_size: int = 4
    max_length: int = 1024
    """Tokens per training record (prompt, demos and reply); longer ones are an error."""
    max_tokens: int = 96
    """New tokens per module call."""
    task_max_tokens: dict[str, int] = field(default_factory=dict)
    """Per task, instead of max_tokens (e.g. {wordproblems: 64}: a chain of thought that has not
    reached its answer by then rarely does)."""
    threads: int = 16
    """DSPy's threads: concurrent requests, which the server batches."""
    decode_slots: int = 16
    """The server's batch size."""
    device: str = "cpu"
    """Where the student is served and trained (cpu, cuda)."""
    precision: str = "fp32"
    """The served model's and the trainer's (fp32, bf16)."""
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [t for t in self.tasks if t not in TASK_NAMES]
        if bad or not self.tasks:
            raise ValueError(f"tasks: expected some of {', '.join(TASK_NAMES)}, got {self.tasks}")
        bad = [s for s in self.strategies if s not in STRATEGIES]
        if bad or not self.strategies:
            raise ValueError(f"strategies: expected some of {', '.join(STRATEGIES)}, got {bad or '[]'}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds: expected distinct seeds, at least one")
        for t in self.tasks:
            s = self.sizes.get(t, DEFAULT_SIZES.get(t))
            if isinstance(s, dict):
                unknown = set(s) - {"train", "val", "test"}
                if unknown:
                    raise ValueError(f"sizes.{t}: unknown field {sorted(unknown)[0]} "
                                     "(expected train, val, test)")
                s = Sizes(**{**DEFAULT_SIZES[t].__dict__, **s})
            self.sizes[t] = s
            if min(s.train, s.val, s.test) < 1:
                raise ValueError(f"sizes.{t}: train, val and test must be at least 1")
        for t, n in self.task_max_tokens.items():
            if t not in TASK_NAMES:
                raise ValueError(f"task_max_tokens: unknown task {t} (expected one of "
                                 f"{', '.join(TASK_NAMES)})")
            if not isinstance(n, int) or isinstance(n, bool) or n < 1:
                raise ValueError(f"task_max_tokens.{t}: must be a positive integer, got {n!r}")
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected fp32 or bf16, got {self.precision!r}")
        for name in ("candidates", "max_demos", "epochs", "batch_size", "max_tokens", "threads",
                     "decode_slots", "lora_r"):
            if getattr(self, name) < (0 if name == "candidates" else 1):
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")

    def max_tokens_for(self, task: str) -> int:
        return self.task_max_tokens.get(task, self.max_tokens)

    def tune(self) -> dict:
        """The LoRA settings every fine-tune uses (TuneConfig fields)."""
        return {"lora_r": self.lora_r, "lora_alpha": self.lora_alpha, "epochs": self.epochs,
                "lr": self.lr, "batch_size": self.batch_size, "max_length": self.max_length,
                "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                   "down_proj"],
                "warmup_steps": 2, "save_every": 0, "seed": self.seed, "device": self.device,
                "precision": self.precision}


@dataclass
class ChainStage:
    """One optimizer chain on one task and seed, and every program it yields, tested."""

    task: str
    chain: str
    model: str
    sizes: Sizes
    candidates: int
    max_demos: int
    tune: dict
    max_tokens: int
    threads: int
    decode_slots: int
    device: str
    precision: str
    seed: int
    test_vanilla: bool = True
    """Test the unoptimized program too (the first chain of each task and seed does; every chain
    starts from the same program)."""


@dataclass
class TableStage:
    tasks: list[str]
    strategies: list[str]
    stages: dict[str, list[str]]
    """Per task, the chain stages to read (every seed, every chain)."""
    model: str
    seed: int = 0
    sizes: dict[str, dict] = field(default_factory=dict)
    """Per task, {train, val, test}: the splits, for the constant-answer reference row."""
