"""Attention over packed rows, one example at a time.

A packed row (`batches.collate_packed`) holds a micro-batch's examples end to end. transformers
keeps them apart with a block-diagonal mask built from the position_ids, and sdpa then computes
attention over the whole row under that mask: for 4 chats of 150 tokens, a 600 x 600 score
matrix where 4 x 150 x 150 would do. On the training benchmark that gave packed batches 0.91x
the tokens/s of length-grouped padded ones (bench/results/train_sft.json as of commit 45aa79d);
with per-example attention, 1.00x (the file as it is now).

`SEGMENTED` is an attention implementation registered with transformers' `AttentionInterface`:
given the row's example lengths (the `adaptlab_segments` keyword the training loss passes down
through the decoder), it runs transformers' own sdpa attention on each example's slice of the
queries, keys and values with a plain causal mask, and joins the outputs. Without that keyword
it is transformers' sdpa attention, unchanged (padded batches, evaluation, generation), and its
mask function is sdpa's. The loop switches an sdpa model to it for training only, and back
before saving. The setup check (`loop._packing_ok`) compares its packed logits with each
example's own, as for the mask path.
"""
from __future__ import annotations

NAME = "adaptlab_segments"
KEY = "adaptlab_segments"
_registered = False


def register() -> None:
    """Register `NAME` with transformers (once)."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    _registered = True


def attention(module, query, key, value, attention_mask, dropout: float = 0.0,
              scaling: float | None = None, is_causal: bool | None = None, **kwargs):
    """sdpa attention; with `adaptlab_segments=[lengths]` (batch 1, lengths summing to the row),
    each segment attends causally to itself alone. query, key, value: batch x heads x seq x dim;
    returns (batch x seq x heads x dim, None), as sdpa's does."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    lengths = kwargs.pop(KEY, None)
    if lengths is None or len(lengths) == 1:
        if lengths is not None:
            attention_mask = None
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    if query.shape[0] != 1 or sum(lengths) != query.shape[2]:
        raise ValueError(f"{KEY}: lengths {lengths} do not cover a packed row of shape "
                         f"{tuple(query.shape)}")
    # torch.split, not a slice per segment: the backward of a split is one cat of the segments'
    # gradients, where each slice's backward writes its gradient into a zeroed full-size tensor.
    lengths = [int(n) for n in lengths]
    outs = [sdpa_attention_forward(module, q, k, v, None, dropout=dropout, scaling=scaling,
                                   is_causal=True, **kwargs)[0]
            for q, k, v in zip(query.split(lengths, dim=2), key.split(lengths, dim=2),
                               value.split(lengths, dim=2))]
    return torch.cat(outs, dim=1), None


def enable(model) -> str | None:
    """Switch `model` (a transformers model) from sdpa to `NAME` attention; returns the
    implementation to restore (`restore`), or None where it did not run sdpa (left as it is)."""
    before = getattr(model.config, "_attn_implementation", None)
    if before != "sdpa" or not callable(getattr(model, "set_attn_implementation", None)):
        return None
    register()
    model.set_attn_implementation(NAME)
    return before


def restore(model, before: str | None) -> None:
    if before is not None:
        model.set_attn_implementation(before)
