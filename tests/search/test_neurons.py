"""The neuron baseline against its definition, written out one neuron and one sign at a time."""

import pytest
import torch

from codebook_features.search.neurons import best_neurons


def by_definition(acts: torch.Tensor, labels: torch.Tensor, recalls: list[float]):
    """Per feature: each neuron, read as it is and with its sign flipped (in that order), gets
    the threshold reached by the share ``recall`` of the feature's tokens; the first neuron of
    the highest precision wins."""
    precision, which = [], []
    neurons = acts.shape[1]
    for feature, recall in enumerate(recalls):
        positive = labels == feature
        count = int(positive.sum())
        if count == 0:
            precision.append(0.0)
            which.append(0)
            continue
        need = max(1, min(count, round(recall * count)))
        scores = []
        for values in [acts[:, j] for j in range(neurons)] + [-acts[:, j] for j in range(neurons)]:
            threshold = sorted(values[positive].tolist(), reverse=True)[need - 1]
            reach = values >= threshold
            scores.append(int((reach & positive).sum()) / max(1, int(reach.sum())))
        best = max(range(len(scores)), key=lambda i: (scores[i], -i))
        precision.append(scores[best])
        which.append(best if best < neurons else -(best - neurons + 1))
    return precision, which


@pytest.mark.parametrize("ties", [False, True])
def test_best_neurons_follow_the_definition(ties: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    for _ in range(10):
        tokens = int(torch.randint(40, 300, (), generator=generator))
        neurons = int(torch.randint(1, 7, (), generator=generator))
        acts = torch.randn(tokens, neurons, generator=generator)
        if ties:  # many tokens share a value, at the thresholds too
            acts = acts.mul(2).round()
        labels = torch.randint(-1, 4, (tokens,), generator=generator)
        recalls = torch.tensor([1.0, 0.5, 0.9, 0.1, 0.7])  # feature 4 has no tokens
        precision, which = best_neurons(acts, labels, recalls)
        expected_precision, expected_which = by_definition(acts, labels, recalls.tolist())
        assert precision.tolist() == expected_precision
        assert which.tolist() == expected_which
