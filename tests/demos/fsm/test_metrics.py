"""The experiment's measures on hand-made inputs, where the right answer is known."""

import numpy as np
import torch

from codebook_features.demos.fsm.analysis import state_codes, state_labels
from codebook_features.demos.fsm.evaluation import first_transition_accuracy, state_accuracy
from codebook_features.demos.fsm.interventions import jensen_shannon
from codebook_features.demos.fsm.machine import FSM
from codebook_features.search.features import code_feature_counts
from codebook_features.search.neurons import best_neurons


def small_fsm() -> FSM:
    # 4 states, 2 edges each, 1 digit per state
    return FSM(4, 2, 10, 0, np.array([[1, 2], [2, 3], [3, 0], [0, 1]]))


def test_state_accuracy_counts_valid_transitions() -> None:
    fsm = small_fsm()
    sequences = np.array(
        [
            [10, 0, 1, 2, 3],  # 0->1 ok, 1->2 ok, 2->3 ok
            [10, 0, 3, 0, 7],  # 0->3 no, 3->0 ok, 0->7 malformed
        ]
    )
    assert state_accuracy(fsm, sequences) == 4 / 6


class FixedModel(torch.nn.Module):
    """Next-token logits that prefer, after each state, a chosen set of next states."""

    def __init__(self, prefer: dict[int, list[int]]) -> None:
        super().__init__()
        self.prefer = prefer
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, use_cache=False):
        logits = torch.full((*input_ids.shape, 11), -20.0)
        for row, last in enumerate(input_ids[:, -1].tolist()):
            for rank, nxt in enumerate(self.prefer.get(last, [])):
                logits[row, -1, nxt] = 5.0 - rank
        return type("Out", (), {"logits": logits})()


def test_first_transition_accuracy_is_top_e_overlap() -> None:
    fsm = small_fsm()
    right = FixedModel({s: list(fsm.edges[s]) for s in range(4)})
    assert first_transition_accuracy(right, fsm) == 1.0
    half = FixedModel({0: [1, 3], 1: [2, 0], 2: [3, 1], 3: [0, 2]})  # one right edge of two
    assert first_transition_accuracy(half, fsm) == 0.5


def test_jensen_shannon_divergence_known_values() -> None:
    p = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.25, 0.75]], dtype=torch.float64)
    q = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.75, 0.25]], dtype=torch.float64)
    jsd = jensen_shannon(p, q)
    assert torch.allclose(jsd[:2], torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert 0 < jsd[2] < 1 and torch.isclose(jsd[2], jensen_shannon(q[2:], p[2:])[0])


def test_analysis_finds_a_planted_code_for_every_state() -> None:
    fsm = small_fsm()
    tokens = torch.tensor(fsm.to_tokens(fsm.rollouts(200, 6, seed=0)))
    labels = state_labels(fsm, tokens)
    assert labels[0, 0] == -1 and labels[0, 1] == int(tokens[0, 1])
    flat = labels.reshape(-1)
    # group 1 plants code 10 + s for state s (and code 0 elsewhere); group 0 is noise
    codes = torch.zeros(len(flat), 2, 1, dtype=torch.long)
    codes[:, 0, 0] = torch.randint(0, 16, (len(flat),))
    codes[:, 1, 0] = torch.where(flat >= 0, 10 + flat, torch.zeros_like(flat))
    counts = code_feature_counts(codes, flat, num_codes=16, num_features=4)
    group, code, precision, recall = counts.best_codes()
    assert group.tolist() == [1] * 4 and code.tolist() == [10, 11, 12, 13]
    assert torch.equal(precision, torch.ones(4, dtype=torch.float64))
    assert torch.equal(recall, torch.ones(4, dtype=torch.float64))
    assert state_codes(counts, 1)[:, 1, 0].tolist() == [10, 11, 12, 13]


def test_neuron_baseline_finds_the_planted_neuron() -> None:
    torch.manual_seed(0)
    labels = torch.randint(-1, 3, (3000,))
    acts = torch.randn(3000, 6)
    acts[:, 4] = -(labels == 2).float() * 5 + 0.1 * torch.randn(3000)  # state 2, sign flipped
    precision, which = best_neurons(acts, labels, torch.tensor([0.5, 0.5, 0.9]))
    assert which[2] == -(4 + 1) and precision[2] == 1.0
    assert precision[0] < 0.6 and precision[1] < 0.6  # no neuron knows states 0 and 1


def test_state_swaps_refuse_machines_without_valid_swaps() -> None:
    import pytest

    from codebook_features import CodebookError
    from codebook_features.demos.fsm.interventions import state_swaps

    fsm = FSM.generate(3, 3)  # every state goes everywhere: no swap can show anything
    tokens = torch.tensor(fsm.to_tokens(fsm.rollouts(4, 5, seed=0)))
    with pytest.raises(CodebookError, match="no transition can be swapped"):
        state_swaps(None, fsm, tokens, {}, num_transitions=5)  # type: ignore[arg-type]
