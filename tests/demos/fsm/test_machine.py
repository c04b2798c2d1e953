"""The FSM, its token encoding, and its data directory."""

import itertools

import numpy as np
import pytest

from codebook_features import CodebookError
from codebook_features.demos.fsm.config import MachineSettings
from codebook_features.demos.fsm.data import make_data
from codebook_features.demos.fsm.machine import FSM


def test_generate_is_seeded_with_distinct_sorted_edges() -> None:
    a, b = FSM.generate(30, 5, seed=3), FSM.generate(30, 5, seed=3)
    assert np.array_equal(a.edges, b.edges)
    assert not np.array_equal(a.edges, FSM.generate(30, 5, seed=4).edges)
    assert a.edges.shape == (30, 5)
    for row in a.edges:
        assert len(set(row)) == 5 and list(row) == sorted(row)
    np.testing.assert_allclose(a.transition_matrix().sum(1), 1.0)


def test_tokens_and_parsing() -> None:
    fsm = FSM.generate(100, 10, base=10)
    assert fsm.digits == 2 and fsm.bos == 10 and fsm.vocab_size == 11
    tokens = fsm.to_tokens(np.array([[7, 42, 99]]))
    assert tokens.tolist() == [[10, 0, 7, 4, 2, 9, 9]]
    assert fsm.parse(tokens[0]) == [7, 42, 99]
    assert fsm.parse([10, 0, 7, 10, 2, 4, 2]) == [7, None, 42]  # BOS inside a state
    assert fsm.parse([10, 0, 7, 4]) == [7]  # the incomplete state is dropped
    small = FSM.generate(8, 2, base=10)
    assert small.digits == 1 and small.parse([10, 3, 9]) == [3, None]  # 9 is no state
    assert FSM.generate(16, 2, base=4).digits == 2


def test_rollouts_follow_edges() -> None:
    fsm = FSM.generate(20, 3, seed=1)
    walks = fsm.rollouts(50, 12, seed=0)
    assert all(fsm.is_edge(a, b) for w in walks for a, b in itertools.pairwise(w))
    assert np.array_equal(walks, fsm.rollouts(50, 12, seed=0))


def machine(states: int, edges: int, **sizes: int) -> MachineSettings:
    sizes = {"train_sequences": 10, "val_sequences": 4, "states_per_sequence": 5} | sizes
    return MachineSettings(num_states=states, num_edges=edges, **sizes)


def test_data_directory_round_trips(tmp_path) -> None:
    data = make_data(tmp_path / "d", machine(12, 3, train_sequences=40, val_sequences=8))
    fsm = data.fsm()
    assert np.array_equal(fsm.edges, FSM.generate(12, 3).edges)
    val = data.validation_tokens()
    assert val.shape == (8, 1 + 2 * 5) and (val[:, 0] == fsm.bos).all()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data.tokenizer)
    assert tokenizer.decode(val[0].tolist()).startswith("<bos>")
    assert tokenizer("<bos>0711")["input_ids"] == [10, 0, 7, 1, 1]


def test_bad_machines_are_refused(tmp_path) -> None:
    with pytest.raises(CodebookError, match="exceeds num_states"):
        FSM.generate(4, 5)
    (tmp_path / "fsm.json").write_text('{"num_states": 2}')
    with pytest.raises(CodebookError, match="could not read the FSM"):
        FSM.load(tmp_path / "fsm.json")


def test_making_data_never_replaces_other_files(tmp_path) -> None:
    target = tmp_path / "mine"
    target.mkdir()
    (target / "notes.txt").write_text("keep")
    with pytest.raises(CodebookError, match="not made by codebook-features"):
        make_data(target, machine(6, 2))
    assert (target / "notes.txt").read_text() == "keep"
    make_data(tmp_path / "d", machine(6, 2))
    with pytest.raises(CodebookError, match="pass --overwrite"):
        make_data(tmp_path / "d", machine(6, 2))
    make_data(tmp_path / "d", machine(7, 2), overwrite=True)
    assert FSM.load(tmp_path / "d" / "fsm.json").num_states == 7
    (tmp_path / "d" / "my_notes.txt").write_text("keep")  # overwrite never deletes these
    with pytest.raises(CodebookError, match=r"also holds files it did not make \(my_notes\.txt\)"):
        make_data(tmp_path / "d", machine(6, 2), overwrite=True)
    assert (tmp_path / "d" / "my_notes.txt").read_text() == "keep"
