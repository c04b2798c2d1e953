"""Absolute positions of a forward pass's tokens, from its cache arguments."""

from __future__ import annotations

import pytest
import torch

from codebook_features.errors import CodebookError
from codebook_features.token_positions import TokenPositions


class _States:
    """A cache of recurrent states: no length of its own."""


def test_cache_position_is_preferred() -> None:
    tokens = TokenPositions()
    ids = torch.zeros(1, 2, dtype=torch.long)
    tokens.start(
        (), {"input_ids": ids, "cache_params": _States(), "cache_position": torch.arange(5, 7)}
    )
    assert tokens.offset == 5
    assert tokens.positions(2, torch.device("cpu")).tolist() == [5, 6]


def test_cache_params_are_counted_through() -> None:
    tokens, states = TokenPositions(), _States()
    tokens.start((), {"input_ids": torch.zeros(1, 4, dtype=torch.long)})
    tokens.finish({"cache_params": states}, {})
    tokens.start((), {"input_ids": torch.zeros(1, 1, dtype=torch.long), "cache_params": states})
    assert tokens.offset == 4


def test_an_unknown_cache_is_an_error() -> None:
    tokens = TokenPositions()
    ids = torch.zeros(1, 1, dtype=torch.long)
    with pytest.raises(CodebookError, match="cache_position"):
        tokens.start((), {"input_ids": ids, "cache_params": _States()})
