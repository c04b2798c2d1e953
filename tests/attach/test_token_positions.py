"""Absolute positions of a forward pass's tokens, from its cache arguments."""

from __future__ import annotations

import pytest
import torch

from codebook_features.attach.token_positions import TokenPositions
from codebook_features.errors import CodebookError


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


def test_a_reused_recurrent_cache_is_read_where_it_knows_its_length() -> None:
    """A prompt's cache reused for the next token (as HF's docs show): the pass always runs;
    an intervention at an absolute position applies there when the cache says how many tokens
    it holds (transformers 5.25's recurrent caches do), and is refused when it cannot say
    (the older ``MambaCache``), never applied at a guessed position."""
    import copy

    from codebook_features import CodebookModel, CodebookModelConfig
    from codebook_features.attach.interventions import Force
    from tests.family_zoo import tiny

    cbm = CodebookModel(tiny("mamba"), CodebookModelConfig(num_codes=8, k=1, sites=["block"]))
    ids = torch.randint(3, 20, (1, 5))
    with torch.no_grad():
        out = cbm(input_ids=ids, use_cache=True)
        reused = copy.deepcopy(out.cache)
        assert cbm(input_ids=ids[:, -1:], cache=reused).logits.isfinite().all()
        try:
            length = int(out.cache.get_seq_length())
        except (AttributeError, TypeError, ValueError):
            length = None
        with cbm.capture(["layers.0.block"]) as plain:
            cbm(input_ids=ids[:, -1:], cache=copy.deepcopy(out.cache))
        original = int(plain["layers.0.block"][0, 0, 0, 0])
        forced = (original + 1) % 8
        at_next = Force("layers.0.block", {0: [forced]}, positions=[5])
        if length is None:
            with pytest.raises(CodebookError, match="cache_position"), cbm.intervene(at_next):
                cbm(input_ids=ids[:, -1:], cache=copy.deepcopy(out.cache))
            return
        assert length == 5
        elsewhere = Force("layers.0.block", {0: [forced]}, positions=[4])
        for spec, expected in ((at_next, forced), (elsewhere, original)):
            with cbm.intervene(spec), cbm.capture(["layers.0.block"]) as seen:
                cbm(input_ids=ids[:, -1:], cache=copy.deepcopy(out.cache))
            assert int(seen["layers.0.block"][0, 0, 0, 0]) == expected
