"""Deterministic batch order (optionally length-grouped) and right-padded collation.

The order of an epoch is a pure function of ``(seed, epoch)`` through a private
``torch.Generator``, so a resumed run recomputes exactly the batches it had not yet
seen without saving any sampler state. Length grouping follows HF's
``LengthGroupedSampler``: shuffle, cut into mega-batches of 50 batches, sort each
mega-batch by length (longest first), cut into batches, then shuffle the batches.
"""

from __future__ import annotations

from typing import Sequence

import torch

from em_interp.train.encode import IGNORE_INDEX, Encoded

MEGABATCH_FACTOR = 50


def epoch_batches(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int,
                  group_by_length: bool = True) -> list[list[int]]:
    """Example indices of each micro-batch of one epoch (the last batch may be smaller)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if group_by_length:
        mega = batch_size * MEGABATCH_FACTOR
        grouped: list[int] = []
        for start in range(0, len(order), mega):
            chunk = order[start:start + mega]
            grouped.extend(sorted(chunk, key=lambda i: -lengths[i]))
        order = grouped
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if group_by_length and len(batches) > 1:
        perm = torch.randperm(len(batches), generator=g).tolist()
        batches = [batches[i] for i in perm]
    return batches


def collate(examples: Sequence[Encoded], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example: ``input_ids``, ``attention_mask``, ``labels``."""
    width = max(len(e.input_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    labels = torch.full((n, width), IGNORE_INDEX, dtype=torch.long)
    for row, e in enumerate(examples):
        k = len(e.input_ids)
        input_ids[row, :k] = torch.tensor(e.input_ids)
        attention_mask[row, :k] = 1
        labels[row, :k] = torch.tensor(e.labels)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
