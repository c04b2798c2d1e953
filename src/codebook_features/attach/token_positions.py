"""Where the tokens of the current forward pass sit: their (batch, seq) shape and, under a cache,
their absolute positions.

Interventions name absolute positions, also during cached generation, where each pass sees only
the new tokens. ``cache_position``, when a pass is given it, says where its tokens start; else
a KV cache says how many tokens it holds; a cache of recurrent states only (Mamba-like models'
``cache_params``, RWKV's ``state``) does not, so the tokens passed through it are counted. A
cache whose length is unknown and that this model did not fill has no known positions: an
intervention that needs them is an error then (not position 0), a pass without one runs as usual.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor

from codebook_features.errors import CodebookError


class TokenPositions:
    """Tracks one model's forward passes (fed by its pre- and post-forward hooks)."""

    def __init__(self) -> None:
        self.offset: int | None = 0
        """Tokens before the current pass's (those already in its cache); ``None`` when a cache
        of unknown length was given."""
        self._unknown = ""  # why the offset is unknown
        self.shape: tuple[int, int] | None = None
        """(batch, seq) of the current pass, when its input says so."""
        self._seen: tuple[weakref.ref, int] | None = None  # a cache, and tokens through it

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_seen": None}  # a weak reference cannot be pickled

    def start(self, args: tuple, kwargs: dict) -> None:
        """A forward pass begins with these arguments."""
        self.offset = self._past_length(kwargs)
        given = (kwargs.get("input_ids"), kwargs.get("inputs_embeds"), *args[:1])
        ids = next((x for x in given if isinstance(x, Tensor)), None)
        self.shape = tuple(ids.shape[:2]) if isinstance(ids, Tensor) and ids.ndim >= 2 else None

    def finish(self, kwargs: dict, output: Any) -> None:
        """Remember the cache the pass filled and how many tokens it then holds."""
        cache = _cache_of(kwargs) or _cache_of(output if isinstance(output, dict) else {})
        key = _weak(cache)
        if key is not None and self.shape is not None and self.offset is not None:
            self._seen = (key, self.offset + self.shape[1])

    def positions(self, length: int, device: torch.device) -> Tensor:
        """The absolute positions of the current pass's tokens (for interventions)."""
        if self.offset is None:
            raise CodebookError(self._unknown)
        return torch.arange(self.offset, self.offset + length, device=device)

    def unflatten(self, x: Tensor) -> Tensor | None:
        """``x`` as ``(batch, seq, features)`` when a module flattened the current pass's
        tokens; ``None`` when it is not flattened."""
        return None if self.shape is None else unflatten(x, self.shape)

    def _past_length(self, kwargs: dict) -> int | None:
        start = kwargs.get("cache_position")
        if isinstance(start, Tensor) and start.numel():
            return int(start.reshape(-1)[0])
        cache = _cache_of(kwargs)
        if cache is None:
            return 0
        try:
            return int(cache.get_seq_length())
        except (AttributeError, ValueError, TypeError):  # recurrent states: no length of their own
            seen, key = self._seen, _weak(cache)
            if seen is not None and key is not None and seen[0]() is key():
                return seen[1]
            if _is_empty(cache):  # made for this generation, before its first pass
                return 0
        self._unknown = (
            f"a forward pass was given a cache ({type(cache).__name__}) whose length is unknown "
            "and that no earlier pass of this model filled, so the positions an intervention "
            "names cannot be found: pass cache_position with it, or start from the prompt "
            "without a cache"
        )
        return None


def unflatten(x: Tensor, shape: tuple[int, int]) -> Tensor | None:
    """``x`` as ``(batch, seq, features)`` when a module flattened the ``(batch, seq)`` tokens
    (``(batch * seq, features)``, as OPT's MLP does); ``None`` when it is not flattened."""
    if x.ndim == 2 and x.shape[0] == shape[0] * shape[1]:
        return x.view(*shape, x.shape[-1])
    return None


CACHE_ARGUMENTS = ("cache", "past_key_values", "cache_params", "state")
"""The names under which transformers' models take (and return) their caches."""


def _cache_of(values: dict) -> Any:
    """The KV cache or recurrent state among a forward pass's arguments or outputs."""
    for key in CACHE_ARGUMENTS:
        # the plain mapping's lookup: a model output's own get() warns on deprecated names
        value = dict.get(values, key) if isinstance(values, dict) else values.get(key)
        if value is not None:
            return value
    return None


def _is_empty(cache: Any) -> bool:
    """Whether a transformers cache holds nothing yet (none of its layers has a state)."""
    layers = getattr(cache, "layers", None)
    if not isinstance(layers, (list, tuple)) or not layers:
        return False
    for layer in layers:
        if getattr(layer, "is_initialized", False):
            return False
        for flags in ("is_conv_states_initialized", "is_recurrent_states_initialized"):
            if any(getattr(layer, flags, {}).values()):
                return False
    return True


def _weak(cache: Any) -> weakref.ref | None:
    """A weak reference identifying ``cache`` (a list of state tensors by its first one)."""
    if isinstance(cache, (list, tuple)):
        cache = cache[0] if cache else None
    try:
        return None if cache is None else weakref.ref(cache)
    except TypeError:
        return None
