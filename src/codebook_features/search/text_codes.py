"""The codes a model chooses on a text of your own: each token, with its character span and
the code ids of every site (per group, in slot order).

A store answers for the text it recorded; this runs the model on any text, so a user can see
which codes fire on a sentence they wrote, then open those codes' pages in the store.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

from codebook_features.attach.model import CodebookModel
from codebook_features.errors import CodebookError

MAX_CHARACTERS = 20_000
"""Longer texts are refused (a page or a terminal would not show them usefully)."""


@dataclass(frozen=True)
class TokenCodes:
    """One token of the text and the codes of every site there."""

    position: int
    token: int
    """Its token id."""
    text: str
    """Its characters in the text (``text[start:end]``)."""
    start: int
    end: int
    codes: dict[str, list[list[int]]]
    """Site -> per group, the ids of its slots (``-1``: an empty slot)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def text_codes(
    model: CodebookModel, tokenizer: Any, text: str, sites: Any = None
) -> list[TokenCodes]:
    """Run ``model`` on ``text`` (no special tokens added) and return every token with the
    code ids of ``sites`` (all by default: names, kinds or globs)."""
    from codebook_features.store.model_loading import context_length

    if not isinstance(text, str) or not text.strip():
        raise CodebookError("give a text: some characters to run the model on")
    if len(text) > MAX_CHARACTERS:
        raise CodebookError(
            f"the text has {len(text):,} characters; give at most {MAX_CHARACTERS:,}"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise CodebookError(
            "this tokenizer is a slow one, which gives no character offsets: use the model's "
            "fast tokenizer"
        )
    names = model.select_sites(sites)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    if not ids:
        raise CodebookError("the text gives no tokens")
    limit = context_length(model.model.config)
    if limit is not None and len(ids) > limit:
        raise CodebookError(
            f"the text is {len(ids):,} tokens long; this model reads at most {limit:,}: give a "
            "shorter text"
        )
    device = next(model.parameters()).device
    with torch.no_grad(), model.capture(names) as seen:
        model(input_ids=torch.tensor([ids], device=device), use_cache=False)
    per_site = {name: seen[name][0].tolist() for name in names}  # (tokens, groups, slots)
    return [
        TokenCodes(
            position=i,
            token=int(token),
            text=text[start:end],
            start=int(start),
            end=int(end),
            codes={name: per_site[name][i] for name in names},
        )
        for i, (token, (start, end)) in enumerate(zip(ids, offsets, strict=True))
    ]
