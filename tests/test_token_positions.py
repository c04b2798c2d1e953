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


def test_an_unknown_cache_is_an_error_only_where_positions_are_needed() -> None:
    tokens = TokenPositions()
    ids = torch.zeros(1, 1, dtype=torch.long)
    tokens.start((), {"input_ids": ids, "cache_params": _States()})  # a plain pass runs
    assert tokens.offset is None
    with pytest.raises(CodebookError, match="cache_position"):
        tokens.positions(1, torch.device("cpu"))


def test_a_copied_recurrent_cache_runs_without_interventions() -> None:
    import copy

    from codebook_features import CodebookModel, CodebookModelConfig
    from codebook_features.interventions import Force

    from .family_zoo import tiny

    cbm = CodebookModel(tiny("mamba"), CodebookModelConfig(num_codes=8, k=1, sites=["block"]))
    ids = torch.randint(3, 20, (1, 5))
    with torch.no_grad():
        out = cbm(input_ids=ids, use_cache=True)
        reused = copy.deepcopy(out.cache)  # the prompt's cache, reused as HF shows
        assert cbm(input_ids=ids[:, -1:], cache=reused).logits.isfinite().all()
        spec = Force("layers.0.block", {0: [1]}, positions=[5])
        with pytest.raises(CodebookError, match="cache_position"), cbm.intervene(spec):
            cbm(input_ids=ids[:, -1:], cache=copy.deepcopy(out.cache))
