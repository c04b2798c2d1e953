"""Pure metrics of steered text: rates with confidence intervals, diversity, and perplexity.

A rate always carries its counts, so a report can say how sure it is (Wilson interval) and
rates from several runs can be pooled by adding counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_serializer,
    model_validator,
)
from typing_extensions import Self

from codebook_features.errors import CodebookError
from codebook_features.settings.base import Record

Z95 = 1.959963984540054
"""The standard normal quantile of 0.975: a two-sided 95% interval."""


def wilson_interval(hits: int, total: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; unlike the normal approximation it
    stays inside [0, 1] and is sensible at 0 or ``total`` hits. ``(0.0, 1.0)`` when total is 0."""
    _check_counts(hits, total)
    if total == 0:
        return 0.0, 1.0
    p = hits / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    # at 0 or total hits one bound is exactly 0 or 1; rounding would miss it by an ulp
    low = 0.0 if hits == 0 else max(0.0, centre - half)
    high = 1.0 if hits == total else min(1.0, centre + half)
    return low, high


def _check_counts(hits: Any, total: Any) -> None:
    for name, value in (("hits", hits), ("total", total)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise CodebookError(f"{name} must be an integer, got {value!r}")
    if not 0 <= hits <= total:
        raise CodebookError(f"a rate needs 0 <= hits <= total, got {hits} of {total}")


def _none_is_nan(value: Any) -> Any:
    return math.nan if value is None else value


def _nan_is_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


Measure = Annotated[float, BeforeValidator(_none_is_nan), PlainSerializer(_nan_is_none)]
"""A number that may be undefined (nan) or unbounded (inf): saved as null (neither is JSON),
read back as nan."""
Count = Annotated[int, Field(strict=True, ge=0)]
"""A number of things: a whole number >= 0, and an ``int`` (not a float or a bool)."""
DERIVED = ("rate", "low", "high")
"""What a saved rate holds besides its counts: recomputed from them when read."""


class Rate(Record):
    """``hits`` out of ``total``, with the rate's 95% Wilson interval (``low``, ``high``).

    Saved as counts plus the derived numbers (:meth:`to_dict`); read back from the counts."""

    model_config = ConfigDict(frozen=True)

    hits: Count
    total: Count

    @model_validator(mode="before")
    @classmethod
    def _counts_only(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {k: v for k, v in data.items() if k not in DERIVED}
        return data

    @model_validator(mode="after")
    def _hits_within_total(self) -> Self:
        _check_counts(self.hits, self.total)
        return self

    @property
    def rate(self) -> float:
        """hits / total; nan when there is nothing to count."""
        return self.hits / self.total if self.total else math.nan

    @property
    def low(self) -> float:
        return wilson_interval(self.hits, self.total)[0]

    @property
    def high(self) -> float:
        return wilson_interval(self.hits, self.total)[1]

    @model_serializer
    def _with_derived(self) -> dict[str, Any]:
        """Counts plus the derived numbers, for reports; ``rate`` is None (not NaN, which is not
        JSON) when total is 0."""
        low, high = wilson_interval(self.hits, self.total)
        rate = self.rate if self.total else None
        return {"hits": self.hits, "total": self.total, "rate": rate, "low": low, "high": high}


def regex_rate(texts: Iterable[str], pattern: str | re.Pattern[str]) -> Rate:
    """The share of texts in which ``pattern`` matches at least once (``re.search``).

    A str pattern is compiled as given, with no flags: write ``(?i)`` for a case-insensitive
    match, so the pattern alone says exactly what is counted.
    """
    if isinstance(pattern, str):
        try:
            pattern = re.compile(pattern)
        except re.error as error:
            raise CodebookError(f"bad regex {pattern!r}: {error}") from error
    elif not isinstance(pattern, re.Pattern) or not isinstance(pattern.pattern, str):
        raise CodebookError(f"the pattern must be a str or a compiled str regex, got {pattern!r}")
    hits = total = 0
    for text in texts:
        if not isinstance(text, str):
            raise CodebookError(f"regex_rate counts texts (str), got {type(text).__name__}")
        total += 1
        hits += pattern.search(text) is not None
    return Rate(hits=hits, total=total)


def words(text: str) -> list[str]:
    """The whitespace-separated words of a text, as :func:`distinct_n` counts them."""
    return text.split()


def distinct_n(texts: Iterable[str | Sequence[Hashable]], n: int) -> float:
    """Distinct n-grams over all n-grams, counted over all texts together (corpus-level
    distinct-n, Li et al. 2016): low values mean repetitive, degenerate text.

    A str is split into :func:`words`; any other item is taken as a sequence of tokens (ids or
    strings, e.g. generated token ids). N-grams never cross from one text into the next.
    nan when there are no n-grams at all.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise CodebookError(f"n must be a positive integer, got {n!r}")
    if isinstance(texts, str):
        raise CodebookError("distinct_n takes a list of texts, got a single str")
    seen: set[tuple[Hashable, ...]] = set()
    total = 0
    for item in texts:
        if isinstance(item, str):
            tokens: Sequence[Hashable] = words(item)
        elif hasattr(item, "tolist"):  # a tensor or array row: compare values, not objects
            tokens = item.tolist()
        else:
            tokens = list(item)
        grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else math.nan


@dataclass(frozen=True)
class Perplexity:
    """Perplexity of continuations given their prompts."""

    value: float
    """exp(total NLL / total scored tokens) over all texts; nan when no token was scored, inf
    when the exponential overflows."""
    per_text: list[float]
    """Each continuation's own perplexity; nan for one with no scored token, inf where the
    exponential overflows."""
    tokens: int
    """Continuation tokens scored."""

    def to_dict(self) -> dict[str, Any]:
        """Like the fields, with None for nan and inf (neither is JSON)."""

        def plain(x: float) -> float | None:
            return None if not math.isfinite(x) else x

        return {
            "value": plain(self.value),
            "per_text": [plain(x) for x in self.per_text],
            "tokens": self.tokens,
        }


def perplexity(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str | Sequence[int]],
    continuations: Sequence[str | Sequence[int]],
    *,
    batch_size: int = 8,
) -> Perplexity:
    """Perplexity of each continuation given its prompt under ``model`` (a ``CodebookModel``
    or a plain HF causal LM), scoring only the continuation's tokens.

    Prompt and continuation are tokenised separately and their ids concatenated, so token ids
    of a generated continuation are scored exactly as generated. A str prompt is tokenised
    with the tokenizer's defaults (as for generation, e.g. with a BOS token), a str
    continuation without special tokens. The model runs in eval mode (restored afterwards).
    A window longer than the model's context loses tokens from the left; continuation tokens
    left without a predecessor in the window are not scored.
    """
    import torch

    from codebook_features.attach.model import CodebookModel
    from codebook_features.steering.batches import check_batch_size, padded_batches
    from codebook_features.store.model_loading import context_length

    if len(prompts) != len(continuations):
        raise CodebookError(
            f"perplexity needs one prompt per continuation, got {len(prompts)} prompts and "
            f"{len(continuations)} continuations"
        )
    check_batch_size(batch_size)
    hf = model.model if isinstance(model, CodebookModel) else model
    context = context_length(getattr(hf, "config", None))
    vocab = (
        hf.get_input_embeddings().num_embeddings if hasattr(hf, "get_input_embeddings") else None
    )
    windows: list[list[int]] = []
    firsts: list[int] = []  # each window's first scored position
    for i, (prompt, continuation) in enumerate(zip(prompts, continuations, strict=True)):
        head = _ids(tokenizer, prompt, special=True, vocab=vocab, what=f"prompt {i}")
        tail = _ids(tokenizer, continuation, special=False, vocab=vocab, what=f"continuation {i}")
        if not head:
            raise CodebookError(
                f"prompt {i} has no tokens, so the continuation's first token has no context: "
                "give at least one prompt token (e.g. the BOS token)"
            )
        ids = head + tail
        cut = max(0, len(ids) - context) if context else 0
        windows.append(ids[cut:])
        firsts.append(max(len(head) - cut, 1))

    device = next(model.parameters()).device
    nll = [0.0] * len(windows)
    counts = [len(ids) - first for ids, first in zip(windows, firsts, strict=True)]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for input_ids, mask, rows in padded_batches(windows, batch_size, device):
                if not any(counts[i] for i in rows):
                    continue  # nothing to score: skip the forward pass
                logits = model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
                # position t's logits predict token t + 1
                logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
                picked = logprobs.gather(-1, input_ids[:, 1:, None])[..., 0].cpu()
                for row, i in enumerate(rows):
                    scored = picked[row, firsts[i] - 1 : len(windows[i]) - 1]
                    nll[i] = -scored.double().sum().item()
    finally:
        model.train(was_training)
    tokens = sum(counts)
    per_text = [_exp(x / c) if c else math.nan for x, c in zip(nll, counts, strict=True)]
    value = _exp(sum(nll) / tokens) if tokens else math.nan
    return Perplexity(value=value, per_text=per_text, tokens=tokens)


def _exp(x: float) -> float:
    """``math.exp(x)``, but inf where that overflows (a mean loss above ~709.78)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def _ids(tokenizer: Any, text: Any, *, special: bool, vocab: int | None, what: str) -> list[int]:
    """Token ids of ``text``, or ``text`` itself checked when it already is ids."""
    if isinstance(text, str):
        return list(tokenizer(text, add_special_tokens=special)["input_ids"])
    ids = text.tolist() if hasattr(text, "tolist") else list(text)
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise CodebookError(f"{what} must be a str or token ids, got the item {token!r}")
        if vocab is not None and token >= vocab:
            raise CodebookError(f"{what} has token id {token}, beyond the model's vocabulary")
    return ids
