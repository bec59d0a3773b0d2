"""Tokenize chats with assistant-only labels; batches (random ones packed into one row each, or
length-grouped padded ones); the run's global micro-batches and its number of optimizer steps."""
from __future__ import annotations

import math
import random

from ..errors import InputError
from ..models.chat import assistant_labels
from .formatters import Formatter, chat, training_messages


def tokenize(tok, examples: list[dict], max_length: int, truncate: bool, source: str = "data",
             formatter: Formatter = chat):
    """(ids, labels) per example, from the messages `formatter` makes of it."""
    rows = []
    for n, ex in enumerate(examples, 1):
        messages = training_messages(formatter, ex, source, n)
        try:
            ids, labels = assistant_labels(tok, messages)
        except ValueError as e:  # a chat template that cannot mask the non-assistant turns
            raise InputError(source, n, "messages", str(e)) from None
        if len(ids) > max_length and not truncate:
            raise InputError(source, n, "messages",
                             f"{len(ids)} tokens, longer than max_length={max_length} "
                             "(raise max_length or set truncate=true)")
        ids, labels = ids[:max_length], labels[:max_length]
        if all(x == -100 for x in labels):
            raise InputError(source, n, "messages", "no assistant tokens left to train on")
        rows.append((ids, labels))
    return rows


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int,
                grouped: bool = True) -> list[list[int]]:
    """Shuffle, sort by length inside windows of 16 batches, then shuffle the batches; with
    `grouped=False`, plain random batches (the shuffle alone)."""
    rng = random.Random(seed * 100003 + epoch)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if not grouped:
        return [idx[b : b + batch_size] for b in range(0, len(idx), batch_size)]
    window = batch_size * 16
    batches = []
    for w in range(0, len(idx), window):
        chunk = sorted(idx[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def collate(rows, indices, pad_id: int, device):
    import torch

    width = max(len(rows[i][0]) for i in indices)
    ids = torch.full((len(indices), width), pad_id, dtype=torch.long)
    labels = torch.full((len(indices), width), -100, dtype=torch.long)
    mask = torch.zeros((len(indices), width), dtype=torch.long)
    for r, i in enumerate(indices):
        x, y = rows[i]
        ids[r, : len(x)] = torch.tensor(x)
        labels[r, : len(y)] = torch.tensor(y)
        mask[r, : len(x)] = 1
    return ids.to(device), mask.to(device), labels.to(device)


def collate_packed(rows, indices, device):
    """The chats of `indices` end to end in one row: (ids, position_ids, labels), each 1 x total
    length, no padding. Positions restart at 0 with every chat; transformers reads such
    position_ids as packed sequences and keeps each chat's attention to itself. A chat's first
    label is dropped: it would be predicted from the previous chat's last token (in a padded
    batch nothing predicts a row's first token)."""
    import torch

    ids, labels, pos = [], [], []
    for i in indices:
        x, y = rows[i]
        ids += x
        labels += [-100] + list(y[1:])
        pos += range(len(x))
    t = lambda v: torch.tensor([v], dtype=torch.long).to(device)  # noqa: E731
    return t(ids), t(pos), t(labels)


def global_batch(cfg, world: int = 1) -> int:
    """Examples per micro-step over all processes: batch_size per process x processes. An
    optimizer step takes grad_accum of them: batch_size x processes x grad_accum examples."""
    return cfg.batch_size * world


def total_steps(cfg, n: int, world: int = 1) -> int:
    """Optimizer steps of the run over `n` examples: max_steps, or `epochs` at the global batch
    (the same on every rank; one process at batch_size B x N gives the same number as N
    processes at B)."""
    per_epoch = math.ceil(n / global_batch(cfg, world))
    return cfg.max_steps or math.ceil(per_epoch * cfg.epochs / cfg.grad_accum)


def run_batches(cfg, lengths: list[int], total: int, world: int = 1,
                grouped: bool | None = None) -> list[list[int]]:
    """The global micro-batches of the whole run, in order: `batch_order` per epoch at the global
    batch (length-grouped unless cfg.batching is packed, or as `grouped` says), epochs back to
    back, cut at total x grad_accum. A pure function of (config, lengths, world): every rank
    computes the same list and trains on its share of each."""
    size = global_batch(cfg, world)
    per_epoch = math.ceil(len(lengths) / size)
    grouped = cfg.batching != "packed" if grouped is None else grouped
    return [b for e in range(math.ceil(total * cfg.grad_accum / per_epoch) + 1)
            for b in batch_order(lengths, size, cfg.seed, e, grouped)][: total * cfg.grad_accum]
