"""The experiment's records: what they write and what they still read."""

import warnings

import pytest

from codebook_features import CodebookError
from codebook_features.attach.code_ref import CodeRef
from codebook_features.demos.fsm.results import StatePick

ROW = {
    "state": 3,
    "site": "layers.0.mlp",
    "group": 1,
    "precision": 1.0,
    "recall": 0.5,
    "neuron_precision": 0.25,
    "neuron": 4,
}


def test_a_state_pick_names_its_code_by_id() -> None:
    pick = StatePick(**ROW, id=7)
    assert pick.ref == CodeRef("layers.0.mlp", 1, 7)
    saved = pick.to_dict()
    assert saved["id"] == 7 and "code" not in saved
    assert StatePick.from_saved(saved, "results.json") == pick


def test_a_state_pick_saved_with_code_still_loads() -> None:
    saved = {**ROW, "code": 7}  # the id's key before it was named id
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pick = StatePick.from_saved(saved, "results.json")
    assert pick.id == 7 and pick == StatePick(**ROW, id=7)
    assert "code" not in pick.to_dict()


def test_a_state_pick_needs_its_id() -> None:
    with pytest.raises(CodebookError, match="id is required"):
        StatePick(**ROW)
