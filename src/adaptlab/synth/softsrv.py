"""SoftSRV (DeSalvo et al., ICLR 2025): targeted synthetic text from soft prompts learned on a
frozen LM.

A soft prompt (L x d, d = the LM's hidden size) goes in front of the input embeddings of a
frozen causal LM and is trained with the next-token loss on the target samples; sampling the
LM behind it then writes text like the targets. Three parameterizations (`KINDS`):

- noncontextual: one learned L x d prompt (prompt tuning);
- contextual (the paper's MLP variant): an MLP maps a sample's sentence embedding (MiniLM,
  384-d, computed once per sample and stored in OUT) to the L x d prompt;
- mixture: K learned prompts mixed by softmax weights a linear layer (or an MLP) computes from
  the embedding.

Sequences. Training: [soft prompt] [seed_text tokens] [sample tokens] [EOS]; the loss is on the
sample tokens and the EOS (which teaches the LM where a sample ends), never on the prompt or the
seed. Generation: [soft prompt] [seed_text tokens], then sampling until EOS. `seed_text` is
empty by default: SmolLM2's BOS is the chat turn marker <|im_start|>, not a start-of-document
token, so the first sample token is predicted from the last soft prompt position.

Generation contexts are target embeddings with randomized variation: gaussian noise (expected
norm `noise_scale`) added to a random target's unit embedding, then renormalized; or a random
point between two random targets' embeddings, renormalized; or the embeddings as they are.

Why not the kit's loop (train/loop.py) with an injected ModelFactory: its batches carry
(input_ids, attention_mask, labels) only, so a model cannot receive per-example context
vectors, and its rows come through the chat template (assistant turns), while SoftSRV trains on
raw text. This file has its own small loop over the kit's parts: length-grouped batch order and
padding (train/batches.py), the warmup/decay schedule, and checkpoints (train/checkpoint.py:
prompt weights, optimizer, scheduler, RNG, logs; a killed run resumes from the newest).

OUT holds softprompt.safetensors + softprompt.json (the config and the shapes), contexts.
safetensors (the targets' embeddings; not for noncontextual), loss.csv and train_summary.json.
"""
from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

from .. import progress
from ..errors import AdaptlabError, require

KINDS = ("noncontextual", "contextual", "mixture")
VARIATIONS = ("noise", "interpolate", "none")
WEIGHTS = "softprompt.safetensors"
CONFIG = "softprompt.json"
CONTEXTS = "contexts.safetensors"
FORMAT = 1

EmbedFn = Callable[[list[str]], Any]  # texts -> (n, dim) unit vectors (numpy or torch)


@dataclass
class SoftPromptConfig:
    """A SoftSRV generator: which soft prompt, on which frozen LM, trained how."""

    kind: Literal["noncontextual", "contextual", "mixture"] = "contextual"
    """noncontextual: one learned prompt; contextual: an MLP maps a sample's embedding to the
    prompt; mixture: `bases` learned prompts mixed by weights computed from the embedding."""
    model: str = "smollm2-135m-instruct"
    """The frozen LM: packaged name, local directory or hub id."""
    length: int = 16
    """L, the soft prompt's length in virtual tokens."""
    bases: int = 4
    """K, the prompts a mixture mixes (kind=mixture)."""
    hidden: int = 256
    """Width of the MLP's hidden layer (kind=contextual; kind=mixture: 0 = a linear layer)."""
    init_text: str = ""
    """Initial prompt: this text's token embeddings, repeated or cut to `length`; empty = the
    embeddings of random vocabulary tokens (the scale of real embeddings, as prompt tuning
    does). contextual: the MLP's output bias starts there (its weights at 0); mixture: basis 0
    starts there, the others at random tokens."""
    seed_text: str = ""
    """Hard text between the soft prompt and the sample, in training and generation (no loss on
    it); empty = none."""
    embedder: str = "minilm-l6"
    """Sentence embedding model for the contexts (not used by kind=noncontextual)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (linear warmup, then linear decay to 0)."""
    warmup_steps: int = 0
    """Warmup optimizer steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    steps: int = 0
    """Optimizer steps (0 = run `epochs`)."""
    epochs: int = 1
    """Passes over the targets when steps = 0."""
    batch_size: int = 8
    """Target samples per step (padded to the longest)."""
    max_length: int = 256
    """Longest sample in tokens, EOS included; longer ones are cut."""
    seed: int = 0
    """Seed for the prompt's init and the data order."""
    save_every: int = 0
    """Checkpoint every N steps (0 = never); a rerun into the same OUT resumes from the newest."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """The frozen LM's weights; the prompt parameters stay fp32."""
    device: str = "cpu"
    """cpu or cuda."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for name in ("length", "bases", "epochs", "batch_size", "max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("hidden", "warmup_steps", "steps", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.kind == "contextual" and self.hidden < 1:
            raise ValueError("kind=contextual needs hidden >= 1 (the MLP's width)")
        if not 0 < self.lr < math.inf:
            raise ValueError(f"lr must be > 0 and finite, got {self.lr}")
        if not 0 <= self.weight_decay < math.inf:
            raise ValueError(f"weight_decay must be >= 0 and finite, got {self.weight_decay}")

    @property
    def contextual(self) -> bool:
        return self.kind != "noncontextual"


# --- the prompt module -------------------------------------------------------------------


def build_prompt(cfg: SoftPromptConfig, dim: int, ctx_dim: int, init=None):
    """The trainable module: an nn.Module holding exactly the prompt parameters. `init` (an
    (L or K*L) x d tensor) starts it; None = zeros (for loading saved weights)."""
    torch = require("torch", "train")
    nn = torch.nn
    L, m = cfg.length, nn.Module()
    if init is None:
        init = torch.zeros((cfg.bases if cfg.kind == "mixture" else 1) * L, dim)
    if cfg.kind == "noncontextual":
        m.prompt = nn.Parameter(init[:L].clone())
    elif cfg.kind == "contextual":
        m.mlp = _mlp(nn, ctx_dim, cfg.hidden, L * dim)
        m.mlp[-1].bias.data.copy_(init[:L].reshape(-1))
    else:
        m.bases = nn.Parameter(init.reshape(cfg.bases, L, dim).clone())
        if cfg.hidden:
            m.mix = _mlp(nn, ctx_dim, cfg.hidden, cfg.bases)
        else:
            m.mix = nn.Linear(ctx_dim, cfg.bases)
            nn.init.zeros_(m.mix.weight)
            nn.init.zeros_(m.mix.bias)
    return m


def _mlp(nn, d_in: int, hidden: int, d_out: int):
    """Its last layer starts at zero weight: the output starts at the bias (a prompt at the
    scale of real embeddings, or equal mixture weights) whatever the context."""
    mlp = nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


def soft_prompt(module, kind: str, length: int, ctx=None, batch: int = 1):
    """(batch, L, d) prompts; `ctx` (batch, ctx_dim) unit embeddings, unused by noncontextual.
    Contexts are scaled by sqrt(ctx_dim): unit vectors have coordinates ~1/sqrt(dim), which
    would start the first layer near zero."""
    if kind == "noncontextual":
        return module.prompt.unsqueeze(0).expand(batch, -1, -1)
    if ctx is None:
        raise AdaptlabError(f"kind={kind}: the soft prompt needs a context embedding")
    x = ctx.float() * math.sqrt(ctx.shape[-1])
    if kind == "contextual":
        return module.mlp(x).view(x.shape[0], length, -1)
    w = module.mix(x).softmax(-1)  # (batch, K)
    return (w[:, :, None, None] * module.bases.unsqueeze(0)).sum(1)


def init_embeddings(cfg: SoftPromptConfig, lm, tok):
    """(K*L or L) x d starting embeddings: init_text's tokens repeated/cut to L, or random
    vocabulary tokens (torch's RNG, which the caller seeds)."""
    import torch

    E = lm.get_input_embeddings().weight.detach().float().cpu()
    n = cfg.bases * cfg.length if cfg.kind == "mixture" else cfg.length
    ids = torch.randint(0, E.shape[0], (n,))
    if cfg.init_text:
        text = tok(cfg.init_text, add_special_tokens=False).input_ids
        if not text:
            raise AdaptlabError("init_text: no tokens")
        ids[: cfg.length] = torch.tensor((text * math.ceil(cfg.length / len(text)))[: cfg.length])
    return E[ids].clone()


# --- data ----------------------------------------------------------------------------------


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    if not texts:
        raise AdaptlabError("softsrv: no target texts to train on")
    for i, t in enumerate(texts, 1):
        if not isinstance(t, str) or not t.strip():
            raise AdaptlabError(f"softsrv: target {i} is empty or not a string")
    return texts


def _rows(tok, texts: list[str], cfg: SoftPromptConfig) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) per sample: seed tokens (label -100), the sample's tokens and EOS."""
    seed = _seed_ids(tok, cfg)
    rows, cut = [], 0
    for t in texts:
        ids = (tok(t, add_special_tokens=False).input_ids + [tok.eos_token_id])
        cut += len(ids) > cfg.max_length
        ids = ids[: cfg.max_length]
        rows.append((seed + ids, [-100] * len(seed) + ids))
    if cut:
        progress.log(f"softsrv: {cut} of {len(texts)} targets cut to max_length={cfg.max_length}")
    return rows


def _seed_ids(tok, cfg: SoftPromptConfig) -> list[int]:
    return tok(cfg.seed_text, add_special_tokens=False).input_ids if cfg.seed_text else []


def embed_texts(texts: list[str], cfg: SoftPromptConfig, embed_fn: EmbedFn | None = None):
    """(n, dim) float32 unit vectors: `embed_fn`, else adaptlab's sentence embeddings."""
    if embed_fn is None:
        from ..evaluate.embed import embed

        def embed_fn(ts):
            return embed(ts, cfg.embedder)
    return as_unit(embed_fn(list(texts)), len(texts))


def as_unit(e, n: int | None = None):
    """`e` ((n, dim), numpy or torch) as float32 unit rows; checks the shape."""
    import torch

    e = torch.as_tensor(e, dtype=torch.float32)
    if e.ndim != 2 or e.shape[0] < 1 or (n is not None and e.shape[0] != n):
        raise AdaptlabError(f"softsrv: embeddings of shape {tuple(e.shape)}"
                            + (f" for {n} texts" if n is not None else ""))
    return torch.nn.functional.normalize(e, dim=-1)


def _contexts(cfg, texts, out: Path, embeddings, embed_fn):
    """The targets' embeddings, computed once and kept in OUT (a resumed run reads them back
    when the targets and embedder are the same)."""
    from safetensors import safe_open

    from ..io import sha256_json

    if not cfg.contextual:
        return None
    if embeddings is not None:
        return _keep(as_unit(embeddings, len(texts)), out / CONTEXTS, "given")
    key, path = sha256_json([cfg.embedder, texts]), out / CONTEXTS
    if path.is_file():
        with safe_open(str(path), "pt") as f:
            if (f.metadata() or {}).get("key") == key:
                return f.get_tensor("contexts")
    return _keep(embed_texts(texts, cfg, embed_fn), path, key)


def _keep(ctx, path: Path, key: str):
    from safetensors.torch import save_file

    from ..io import atomic_path

    with atomic_path(path, ".safetensors") as tmp:
        save_file({"contexts": ctx.contiguous()}, str(tmp), metadata={"key": key})
    return ctx


# --- training ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Weights:
    """What train/checkpoint.py needs of a factory: a name (per kind: a checkpoint resumes only
    the kind that wrote it) and the trained tensors."""

    name: str

    @staticmethod
    def state(module) -> dict:
        return module.state_dict()

    @staticmethod
    def load_state(module, tensors: dict) -> None:
        module.load_state_dict(tensors)


def freeze(lm):
    lm.requires_grad_(False)
    return lm.eval()


def prompt_loss(lm, prompts, ids, mask, labels):
    """Mean next-token loss on the labelled tokens with `prompts` (B, L, d) in front."""
    import torch

    emb = lm.get_input_embeddings()(ids)
    B, L = prompts.shape[:2]
    x = torch.cat([prompts.to(emb.dtype), emb], 1)
    m = torch.cat([mask.new_ones(B, L), mask], 1)
    y = torch.cat([labels.new_full((B, L), -100), labels], 1)
    return lm(inputs_embeds=x, attention_mask=m, labels=y).loss.float()


def _order(cfg: SoftPromptConfig, rows) -> list[list[int]]:
    """The run's batches: the kit's length-grouped order, epoch after epoch, cut at the total."""
    from ..train.batches import batch_order

    per_epoch = math.ceil(len(rows) / cfg.batch_size)
    total = cfg.steps or per_epoch * cfg.epochs
    lengths = [len(r[0]) for r in rows]
    return [b for e in range(math.ceil(total / per_epoch))
            for b in batch_order(lengths, cfg.batch_size, cfg.seed, e)][:total]


def train_generator(cfg: SoftPromptConfig, texts: Sequence[str], out: str | Path,
                    embeddings=None, embed_fn: EmbedFn | None = None, lm=None) -> dict:
    """Train a soft prompt on `texts` and write the generator to `out`; returns the summary
    (losses per step, final_loss, trainable_params, seconds, ...). Resumes from OUT's newest
    checkpoint (save_every).

    `embeddings`: the targets' (n, dim) embeddings, else `embed_fn(texts)`, else MiniLM (not
    needed by kind=noncontextual). `lm`: an already loaded (model, tokenizer) to use instead of
    loading cfg.model (it is frozen in place)."""
    return fit(cfg, texts, out, embeddings, embed_fn, lm).summary


def fit(cfg: SoftPromptConfig, texts: Sequence[str], out: str | Path, embeddings=None,
        embed_fn: EmbedFn | None = None, lm=None) -> Generator:
    """`train_generator`, returning the trained generator (its `summary` set) ready to sample."""
    torch = require("torch", "train")
    from ..train.checkpoint import save_checkpoint
    from ..train.loop import schedule

    out, texts, t0 = Path(out), _check_texts(texts), time.time()
    model, tok = lm if lm is not None else _load_lm(cfg)
    freeze(model)
    ctx = _contexts(cfg, texts, out, embeddings, embed_fn)
    rows = _rows(tok, texts, cfg)
    order = _order(cfg, rows)
    torch.manual_seed(cfg.seed)
    dim = model.get_input_embeddings().weight.shape[1]
    prompt = build_prompt(cfg, dim, ctx.shape[1] if ctx is not None else 0,
                          init_embeddings(cfg, model, tok)).to(cfg.device)
    opt = torch.optim.AdamW(prompt.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(cfg, len(order)))
    step, logs = _resume(out, cfg.kind, prompt, opt, sched)
    before = logs["loss"][-1] if logs["loss"] else {"tokens": 0, "seconds": 0.0}
    tokens, prompt = 0, prompt.train()
    with progress.bar(total=len(order), desc=f"softsrv {cfg.kind}", unit="step") as pb:
        pb.update(step)
        while step < len(order):
            loss, n = _step(cfg, model, tok, prompt, rows, ctx, order[step], opt, sched)
            step, tokens = step + 1, tokens + n
            logs["loss"].append({"step": step, "loss": round(loss, 6),
                                 "lr": sched.get_last_lr()[0], "tokens": before["tokens"] + tokens,
                                 "seconds": round(before["seconds"] + time.time() - t0, 2)})
            pb.update(1)
            pb.set_postfix(loss=f"{loss:.3f}")
            if cfg.save_every and step % cfg.save_every == 0 and step < len(order):
                save_checkpoint(out, step, _Weights(f"softsrv-{cfg.kind}"), prompt,
                                opt.state_dict(), sched.state_dict(), logs)
    summary = _summary(cfg, prompt, logs, tokens, time.time() - t0, dim, ctx)
    _save(out, cfg, prompt, logs, summary)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return Generator(cfg, model, tok, prompt.eval(), ctx, embed_fn, summary)


def _resume(out: Path, kind: str, prompt, opt, sched) -> tuple[int, dict]:
    """(step, logs) from OUT's newest checkpoint, its weights, optimizer, schedule and RNG put
    back; (0, empty logs) without one."""
    import torch

    from ..train.checkpoint import latest_checkpoint, load_progress, load_weights

    ckpt = latest_checkpoint(out)
    if ckpt is None:
        return 0, {"loss": [], "eval": []}
    load_weights(ckpt, _Weights(f"softsrv-{kind}"), prompt)
    step, logs, saved = load_progress(ckpt)
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    torch.set_rng_state(saved["rng"])
    progress.log(f"resuming {out} from step {step}")
    return step, logs


def _step(cfg, lm, tok, prompt, rows, ctx, batch, opt, sched) -> tuple[float, int]:
    from ..train.batches import collate

    ids, mask, labels = collate(rows, batch, tok.pad_token_id or 0, cfg.device)
    c = ctx[batch].to(cfg.device) if ctx is not None else None
    loss = prompt_loss(lm, soft_prompt(prompt, cfg.kind, cfg.length, c, len(batch)),
                       ids, mask, labels)
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach()), int(mask.sum())


def _summary(cfg, prompt, logs, tokens, seconds, dim, ctx) -> dict:
    losses = [r["loss"] for r in logs["loss"]]
    return {"kind": cfg.kind, "steps": len(losses), "losses": losses,
            "final_loss": losses[-1] if losses else None,
            "trainable_params": sum(p.numel() for p in prompt.parameters() if p.requires_grad),
            "hidden_size": dim, "context_dim": int(ctx.shape[1]) if ctx is not None else 0,
            "targets": int(ctx.shape[0]) if ctx is not None else None,
            "tokens_this_session": tokens, "seconds": round(seconds, 2)}


def _save(out: Path, cfg, prompt, logs, summary) -> None:
    from safetensors.torch import save_file

    from ..config import to_dict
    from ..io import write_json
    from ..train.factory import publish
    from ..train.logs import write_logs

    def write(d: Path) -> None:
        save_file({k: v.detach().cpu().contiguous() for k, v in prompt.state_dict().items()},
                  str(d / WEIGHTS))
        write_json(d / CONFIG, {"format": FORMAT, "config": to_dict(cfg),
                                "hidden_size": summary["hidden_size"],
                                "context_dim": summary["context_dim"]})
    publish(out, write, ".softprompt")
    write_logs(out, logs)
    write_json(out / "train_summary.json", summary)


def _load_lm(cfg: SoftPromptConfig):
    from ..models.load import load_model

    return load_model(cfg.model, cfg.precision, device=cfg.device)


# --- generation ----------------------------------------------------------------------------


@dataclass
class Generator:
    """A trained soft prompt on its frozen LM, with the targets' embeddings to vary."""

    cfg: SoftPromptConfig
    lm: Any
    tok: Any
    prompt: Any
    contexts: Any = None  # (n, dim) target embeddings; None for noncontextual
    embed_fn: EmbedFn | None = None
    summary: dict | None = None  # the training summary (after `fit`)

    def soft_prompt(self, ctx=None, batch: int = 1):
        """(batch, L, d) prompts for `ctx` (batch, dim) embeddings, without grad."""
        import torch

        with torch.no_grad():
            c = None if ctx is None else torch.as_tensor(ctx, dtype=torch.float32)
            c = None if c is None else c.to(self.cfg.device)
            return soft_prompt(self.prompt, self.cfg.kind, self.cfg.length, c,
                               batch if c is None else c.shape[0])

    def generate(self, n: int, contexts=None, variation: str = "noise", noise_scale: float = 0.5,
                 temperature: float = 1.0, top_p: float = 0.95, max_new_tokens: int = 128,
                 seed: int = 0, batch_size: int = 8) -> list[str]:
        """`n` sampled texts. Each draws a context from `contexts` ((m, dim) embeddings or a list
        of texts to embed; default the training targets'), varied by `variation` (kind=
        noncontextual has no context: both are ignored); temperature 0 = greedy. The same
        arguments give the same texts."""
        import torch

        if variation not in VARIATIONS:
            raise AdaptlabError(f"variation must be one of {', '.join(VARIATIONS)}, "
                                f"got {variation!r}")
        ctx = draw_contexts(self._pool(contexts), n, variation, noise_scale, seed) \
            if self.cfg.contextual else None
        texts = []
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG where it was
            torch.manual_seed(seed)
            for i in range(0, n, batch_size):
                k = min(batch_size, n - i)
                c = ctx[i : i + k] if ctx is not None else None
                texts += self._sample(self.soft_prompt(c, k), temperature, top_p, max_new_tokens)
        return texts

    def _pool(self, contexts):
        """The embeddings to draw from: the targets', or `contexts` (embeddings, or texts)."""
        if contexts is None:
            if self.contexts is None:
                raise AdaptlabError("softsrv: no contexts to draw from")
            return self.contexts
        if isinstance(contexts, (list, tuple)) and contexts and isinstance(contexts[0], str):
            return embed_texts(list(contexts), self.cfg, self.embed_fn)
        return as_unit(contexts)

    def _sample(self, prompts, temperature, top_p, max_new_tokens) -> list[str]:
        import torch

        emb = self.lm.get_input_embeddings()
        seed = torch.tensor([_seed_ids(self.tok, self.cfg)], device=self.cfg.device)
        x = prompts.to(emb.weight.dtype)
        if seed.shape[1]:
            x = torch.cat([x, emb(seed).expand(x.shape[0], -1, -1)], 1)
        sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) \
            if temperature > 0 else dict(do_sample=False)
        mask = torch.ones(x.shape[:2], dtype=torch.long, device=x.device)
        with torch.no_grad():  # min_new_tokens=1: an empty sample is no sample
            out = self.lm.generate(inputs_embeds=x, attention_mask=mask,
                                   max_new_tokens=max_new_tokens, min_new_tokens=1,
                                   eos_token_id=self.tok.eos_token_id,
                                   pad_token_id=self.tok.pad_token_id, **sampling)
        return [t.strip() for t in self.tok.batch_decode(out, skip_special_tokens=True)]


def draw_contexts(pool, n: int, variation: str, noise_scale: float, seed: int):
    """(n, dim) unit vectors from the (m, dim) `pool`: random rows; noise: plus gaussian noise
    of expected norm `noise_scale`; interpolate: a uniform random point between two different
    random rows; all renormalized."""
    import torch

    g = torch.Generator().manual_seed(seed)
    pool = pool.float().cpu()
    i = torch.randint(0, pool.shape[0], (n,), generator=g)
    c = pool[i]
    if variation == "noise":
        c = c + torch.randn(c.shape, generator=g) * noise_scale / math.sqrt(c.shape[1])
    elif variation == "interpolate":
        m = pool.shape[0]  # j != i where there are two rows to choose from
        j = (i + torch.randint(1, m, (n,), generator=g)) % m if m > 1 else i
        t = torch.rand((n, 1), generator=g)
        c = (1 - t) * c + t * pool[j]
    return torch.nn.functional.normalize(c, dim=-1)


def load_generator(out: str | Path, lm=None, device: str | None = None,
                   precision: str | None = None, embed_fn: EmbedFn | None = None) -> Generator:
    """The generator `train_generator` wrote to `out` (on `device` / at `precision` if given;
    `lm` = an already loaded (model, tokenizer) of the same model)."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from ..config import from_dict
    from ..io import read_json

    out = Path(out)
    if not (out / CONFIG).is_file() or not (out / WEIGHTS).is_file():
        raise AdaptlabError(f"{out}: not a softsrv generator (no {CONFIG} / {WEIGHTS})")
    meta = read_json(out / CONFIG)
    cfg = from_dict(SoftPromptConfig, meta["config"], str(out / CONFIG))
    cfg = replace(cfg, device=device or cfg.device, precision=precision or cfg.precision)
    model, tok = lm if lm is not None else _load_lm(cfg)
    freeze(model)
    dim = model.get_input_embeddings().weight.shape[1]
    if dim != meta["hidden_size"]:
        raise AdaptlabError(f"{out}: trained on a hidden size of {meta['hidden_size']}, "
                            f"the model has {dim}")
    prompt = build_prompt(cfg, dim, meta["context_dim"])
    prompt.load_state_dict(load_file(str(out / WEIGHTS)))
    ctx = load_file(str(out / CONTEXTS))["contexts"] if cfg.contextual else None
    summary = read_json(out / "train_summary.json") if (out / "train_summary.json").is_file() \
        else None
    return Generator(cfg, model, tok, prompt.to(cfg.device).eval(), ctx, embed_fn, summary)
