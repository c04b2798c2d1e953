"""The codes a model chooses on a text of your own: each token, with its character span and
the code ids of every site (per group, in slot order); and what the model would write next,
without and with some codes forced or ablated.

A store answers for the text it recorded; this runs the model on any text, so a user can see
which codes fire on a sentence they wrote, open those codes' pages in the store, and see what
forcing or removing one does to the next token.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import torch

from codebook_features.attach.model import CodebookModel
from codebook_features.errors import CodebookError
from codebook_features.search.token_text import readable_token

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


@dataclass(frozen=True)
class NextToken:
    """A token the model might write next, and its probability."""

    token: int
    text: str
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def next_tokens(
    model: CodebookModel,
    tokenizer: Any,
    text: str,
    *,
    force: Any = (),
    ablate: Any = (),
    position: int | None = None,
    mode: str = "all",
    top: int = 10,
) -> tuple[list[NextToken], list[NextToken] | None]:
    """The ``top`` most likely next tokens after ``text``, and the same with the codes
    ``force`` forced (into ``mode`` slots) and ``ablate`` removed at token ``position`` (the
    last by default); the second is None without codes. Codes are ``SITE/GROUP/ID``."""
    from codebook_features.attach.code_ref import CodeRef, check_codes

    ids, _ = _encode(model, tokenizer, text)
    where = len(ids) - 1 if position is None else position
    if not 0 <= where < len(ids):
        raise CodebookError(f"position {where} is not a token of the text (0 to {len(ids) - 1})")
    steering = []
    kinds = ((force, model.force_codes, {"mode": mode}), (ablate, model.ablate_codes, {}))
    for codes, apply, options in kinds:
        by_site: dict[str, dict[int, list[int]]] = {}  # one spec per site: codes of a group
        for ref in (CodeRef.parse(c) if isinstance(c, str) else c for c in codes):  # share it
            check_codes(model, ref.site, ref.group, [ref.id])
            by_site.setdefault(ref.site, {}).setdefault(ref.group, []).append(ref.id)
        for site, groups in by_site.items():
            steering.append(apply(site, groups, positions=(where,), **options))
    plain = _next(model, tokenizer, ids, [], top)
    return plain, (_next(model, tokenizer, ids, steering, top) if steering else None)


def _next(model: CodebookModel, tokenizer: Any, ids: list[int], steering: list[Any], top: int):
    device = next(model.parameters()).device
    with torch.no_grad(), ExitStack() as stack:
        for item in steering:
            stack.enter_context(item)
        logits = model(input_ids=torch.tensor([ids], device=device), use_cache=False).logits
    probabilities = logits[0, -1].float().softmax(-1)
    values, tokens = probabilities.topk(min(top, probabilities.numel()))
    return [
        NextToken(int(t), readable_token(tokenizer, int(t)), round(float(v), 6))
        for v, t in zip(values.tolist(), tokens.tolist(), strict=True)
    ]


def _encode(
    model: CodebookModel, tokenizer: Any, text: str, *, offsets: bool = False
) -> tuple[list[int], list[tuple[int, int]] | None]:
    """The text's token ids (and character offsets), refused when empty, too long, or over the
    model's context. No special tokens are added, as a store records its documents."""
    from codebook_features.store.model_loading import context_length

    if not isinstance(text, str) or not text.strip():
        raise CodebookError("give a text: some characters to run the model on")
    if len(text) > MAX_CHARACTERS:
        raise CodebookError(
            f"the text has {len(text):,} characters; give at most {MAX_CHARACTERS:,}"
        )
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)
    ids = encoded["input_ids"]
    if not ids:
        raise CodebookError("the text gives no tokens")
    limit = context_length(model.model.config)
    if limit is not None and len(ids) > limit:
        raise CodebookError(
            f"the text is {len(ids):,} tokens long; this model reads at most {limit:,}: give a "
            "shorter text"
        )
    return ids, (encoded["offset_mapping"] if offsets else None)


def text_codes(
    model: CodebookModel, tokenizer: Any, text: str, sites: Any = None
) -> list[TokenCodes]:
    """Run ``model`` on ``text`` (no special tokens added) and return every token with the
    code ids of ``sites`` (all by default: names, kinds or globs)."""
    if not getattr(tokenizer, "is_fast", False):
        raise CodebookError(
            "this tokenizer is a slow one, which gives no character offsets: use the model's "
            "fast tokenizer"
        )
    names = model.select_sites(sites)
    ids, offsets = _encode(model, tokenizer, text, offsets=True)
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
