from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TuneConfig:
    """Supervised fine-tuning of a chat model (loss on assistant tokens only): LoRA adapters,
    all weights, or a soft prompt."""

    model: str = "smollm2-135m-instruct"
    """Student model: packaged name, local directory or hub id."""
    method: Literal["lora", "full", "prompt"] = "lora"
    """lora: low-rank adapters on a frozen base (writes a PEFT adapter); full: every weight trains
    (small models; writes model.safetensors + tokenizer); prompt: soft prompt tuning, virtual token
    embeddings in front of the frozen model (writes a PEFT adapter)."""
    target: Literal["chat", "answer", "explained"] = "chat"
    """What the assistant turns teach: chat: the messages as they are; answer: the same, any
    `explanation` ignored; explained: the final reply becomes `explanation_template` filled with
    the record's explanation and the reply (a record without an explanation is refused)."""
    explanation_template: str = "{explanation}\nThe answer is {answer}."
    """The final assistant reply under target=explained; fields {explanation} and {answer}."""
    precision: Literal["fp32", "bf16", "int8"] = "fp32"
    """fp32; bf16: autocast over fp32 weights; int8 (lora only): frozen base in 8 bits, LoRA
    weights in fp32."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling numerator (scale = alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Linear layers that get LoRA adapters."""
    fused_lora: bool = True
    """Train LoRA layers through one fused autograd function (base matmul, adapter, dropout;
    adaptlab.train.fused_lora): PEFT's math, fewer passes over memory (on the CPU training
    benchmark 0.31 GB less peak RAM, 1.02-1.07x the tokens/s). Applies in fp32 and bf16; int8 and anything PEFT-specific
    run PEFT's forward. Dropout's p is rounded to a multiple of 1/65536. The frozen RMSNorms
    train through one fused function too (adaptlab.train.fused_norm). false = PEFT's and
    transformers' forwards."""
    num_virtual_tokens: int = 20
    """Soft prompt length in virtual tokens (method=prompt)."""
    prompt_init_text: str = ""
    """Initial soft prompt (method=prompt): the embeddings of this text, repeated or cut to
    num_virtual_tokens; empty = the embeddings of randomly drawn vocabulary tokens."""
    lr: float = 2e-4
    """Peak learning rate (linear warmup, then linear decay to 0)."""
    warmup_steps: int = 2
    """Warmup optimizer steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    epochs: int = 2
    """Passes over the data (ignored when max_steps > 0): ceil(examples / (batch_size x
    processes)) micro-steps each, grad_accum micro-steps per optimizer step."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0 = run `epochs`)."""
    batch_size: int = 4
    """Examples per micro-batch per process. An optimizer step trains on batch_size x processes
    x grad_accum examples (processes: 1, or what `accelerate launch` starts); N processes at
    batch_size B train what one process at N x B does."""
    grad_accum: int = 1
    """Micro-steps per optimizer step (the step averages their losses)."""
    max_length: int = 512
    """Longest example in tokens."""
    batching: Literal["packed", "grouped"] = "packed"
    """packed: random batches, each micro-batch's examples end to end in one row (per-example
    positions, attention kept within each example; no padding); checked against padded logits
    when training starts, and grouped where the model does not keep packed examples apart.
    grouped: padded batches of similar length (little padding, the same tokens/s on the
    training benchmark, but examples of a similar length train together: on its chats, where
    length follows the kind of chat, validation loss 2.137 against 2.112 packed;
    bench/results/train_sft.json). method=prompt always trains grouped."""
    truncate: bool = False
    """Cut examples longer than max_length instead of refusing them."""
    seed: int = 0
    """Seed for data order, adapter / soft prompt init and dropout."""
    save_every: int = 10
    """Checkpoint every N optimizer steps (resume picks up the newest)."""
    eval_every: int = 0
    """Call the evaluation hook every N steps (0 = never)."""
    merge: bool = False
    """Also write a merged full model to OUT/merged (method=lora)."""
    device: str = "cpu"
    """cpu or cuda. Ignored under `accelerate launch`: the launcher decides (its --cpu, else
    the GPUs it finds, else the CPU)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, more compute (TRL's trainer on
    the benchmark's 135M LoRA workload: 2.4 GB peak RAM instead of 3.6 GB, 17% fewer tokens/s;
    bench/results/train_sft.json)."""

    def __post_init__(self) -> None:
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "max_length", "epochs",
                     "num_virtual_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "max_steps", "save_every", "eval_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if not 0 < self.lr < math.inf:  # also refuses nan
            raise ValueError(f"lr must be > 0 and finite, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be >= 0 and finite, got {self.weight_decay}")
        if not self.target_modules:
            raise ValueError("target_modules must not be empty")
        self._check_method()
        self._check_template()

    def _check_method(self) -> None:
        if self.method != "lora" and self.precision == "int8":
            raise ValueError(f"precision=int8 is for method=lora only (a frozen 8-bit base under "
                             f"fp32 adapters); method={self.method} takes fp32 or bf16")
        if self.method != "lora" and self.merge:
            raise ValueError(f"merge=true needs method=lora (method={self.method} has no adapter "
                             "to merge)")

    def _check_template(self) -> None:
        try:
            self.explanation_template.format(explanation="", answer="")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError("explanation_template: only the fields {explanation} and {answer} "
                             f"may appear (use {{{{ }}}} for a literal brace): {e!r}") from None
