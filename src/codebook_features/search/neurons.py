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
        acts: ``(tokens, neurons)`` activations.
        labels: ``(tokens,)`` feature of each token, ``-1`` for none.
        recalls: ``(features,)`` target recall per feature, in ``(0, 1]``.
    """
    acts = acts.float()
    signed = torch.cat([acts, -acts], dim=1)  # (T, 2D)
    ordered = signed.sort(dim=0).values.T.contiguous()  # (2D, T) ascending per neuron
    tokens = signed.shape[0]
    precision = torch.zeros(len(recalls), dtype=torch.float64)
    which = torch.zeros(len(recalls), dtype=torch.long)
    for feature, recall in enumerate(recalls.tolist()):
        positive = signed[labels == feature]  # (P, 2D)
        count = positive.shape[0]
        if count == 0 or recall <= 0:
            continue
        need = max(1, min(count, round(recall * count)))
        threshold = positive.topk(need, dim=0).values[-1]  # (2D,) the need-th largest
        above = tokens - torch.searchsorted(ordered, threshold.unsqueeze(1)).squeeze(1)
        hits = (positive >= threshold).sum(0)
        scores = hits.double() / above.double().clamp_min(1)
        best = int(scores.argmax())
        precision[feature] = scores[best]
        neurons = acts.shape[1]
        which[feature] = best if best < neurons else -(best - neurons + 1)
    return precision, which
