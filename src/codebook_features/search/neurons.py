"""The neuron baseline: the single best neuron as a classifier of a feature, at a given recall.

For feature f and neuron j, the threshold is set so that the share ``recall`` of f's tokens
reach it; precision is then the share of all tokens reaching it that have f. A neuron may also
be read with its sign flipped. The best neuron of all is the one with the highest precision.
With tied activations at the threshold, a neuron's recall can come out a little above the
target (every token at the threshold counts).
"""

from __future__ import annotations

import torch
from torch import Tensor


def best_neurons(acts: Tensor, labels: Tensor, recalls: Tensor) -> tuple[Tensor, Tensor]:
    """For every feature ``f``: the best precision of any neuron at recall ``recalls[f]``, and
    that neuron's index (negative ``-(j + 1)`` when read with its sign flipped).

    Args:
        acts: ``(tokens, neurons)`` activations, finite (NaN has no place in the order).
        labels: ``(tokens,)`` feature of each token, ``-1`` for none.
        recalls: ``(features,)`` target recall per feature, in ``(0, 1]``.
    """
    columns = acts.float().T.contiguous()  # (D, T): a neuron's values side by side
    ordered = columns.sort(dim=1).values  # ascending per neuron: counts by binary search
    neurons, tokens = columns.shape
    precision = torch.zeros(len(recalls), dtype=torch.float64)
    which = torch.zeros(len(recalls), dtype=torch.long)
    for feature, recall in enumerate(recalls.tolist()):
        positive = columns[:, labels == feature]  # (D, P)
        count = positive.shape[1]
        if count == 0 or recall <= 0:
            continue
        need = max(1, min(count, round(recall * count)))
        # per neuron, the need-th largest of its values on the feature's tokens, and of their
        # negations (the neuron read with its sign flipped): -(the need-th smallest)
        up = positive.kthvalue(count - need + 1, dim=1).values.unsqueeze(1)
        down = positive.kthvalue(need, dim=1).values.unsqueeze(1)  # -a >= -down <=> a <= down
        above = torch.cat(
            [
                tokens - torch.searchsorted(ordered, up),
                torch.searchsorted(ordered, down, right=True),
            ]
        ).squeeze(1)
        hits = torch.cat([(positive >= up).sum(1), (positive <= down).sum(1)])
        scores = hits.double() / above.double().clamp_min(1)
        best = int(scores.argmax())
        precision[feature] = scores[best]
        which[feature] = best if best < neurons else -(best - neurons + 1)
    return precision, which
