"""Running token sequences through a model in batches: the one place that checks a batch size,
cuts a long sequence into windows that fit the model's context, and pads a batch.

Batches are padded on the right, with an attention mask: under causal attention a real token
only attends to tokens before it, so padding after it leaves its activations (and logits)
exactly as in an unpadded forward pass, and a row's token ``t`` sits at position ``t``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from codebook_features.errors import CodebookError


def check_batch_size(value: Any) -> int:
    """``value`` when it is an integer >= 1 (not a bool), else a :class:`CodebookError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CodebookError(f"batch_size must be an integer >= 1, got {value!r}")
    return value


def windows(ids: Sequence[int], context: int | None) -> list[list[int]]:
    """``ids`` cut into consecutive windows of at most ``context`` tokens (the last one may be
    shorter), so every token is run through the model once and none is dropped; ``None`` (no
    known context) gives one window. An empty sequence has no windows.

    Each window is a forward pass of its own: a token sees only the tokens before it in its
    window, as when a code store records a long document.
    """
    if context is not None and (isinstance(context, bool) or context < 1):
        raise CodebookError(f"the context must be at least 1 token, got {context!r}")
    ids = list(ids)
    if not ids:
        return []
    if context is None:
        return [ids]
    return [ids[start : start + context] for start in range(0, len(ids), context)]


def padded_batches(
    sequences: Sequence[Sequence[int]], batch_size: int, device: Any, pad_id: int = 0
) -> Iterator[tuple[Tensor, Tensor, range]]:
    """``(input_ids, attention_mask, rows)`` for consecutive batches of ``batch_size``
    sequences, in order: ``rows`` is the range of indices into ``sequences`` of the batch, and
    both tensors are ``(len(rows), longest)`` long tensors on ``device``, the sequences padded
    on the right with ``pad_id`` and the mask 1 at real tokens, 0 at padding.

    An empty sequence is refused: its row would be all padding, which a model has nothing to
    attend to (and some attention implementations turn into NaN).
    """
    check_batch_size(batch_size)  # checked here, not when the first batch is asked for
    for index, ids in enumerate(sequences):
        if len(ids) == 0:
            raise CodebookError(f"sequence {index} has no tokens: there is nothing to run")
    return _batches(sequences, batch_size, device, pad_id)


def _batches(
    sequences: Sequence[Sequence[int]], batch_size: int, device: Any, pad_id: int
) -> Iterator[tuple[Tensor, Tensor, range]]:
    for start in range(0, len(sequences), batch_size):
        rows = range(start, min(start + batch_size, len(sequences)))
        longest = max(len(sequences[i]) for i in rows)
        input_ids = torch.full((len(rows), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for row, i in enumerate(rows):
            ids = sequences[i]
            ids = ids.tolist() if hasattr(ids, "tolist") else list(ids)
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        yield input_ids.to(device), mask.to(device), rows
