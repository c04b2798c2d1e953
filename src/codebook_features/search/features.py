"""Codes as classifiers of token features.

A feature labels some tokens (e.g. "the current FSM state is s", "matches this regex"). A code
fires on a token when it is in any of the token's slots. Then, for feature f and code c:
precision = tokens where c fires and f holds / tokens where c fires, and
recall = tokens where c fires and f holds / tokens where f holds.
All codes of all groups are scored against many features at once from one joint count.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from codebook_features.codebook.ops import flat_code_ids
from codebook_features.search.scores import f1


@dataclass
class CodeFeatureCounts:
    """Counts over tokens for one site: ``fires (G, C)``, ``joint (G, C, F)``, ``positives (F)``."""

    fires: Tensor
    joint: Tensor
    positives: Tensor

    @property
    def precision(self) -> Tensor:
        """``(G, C, F)``; 0 for codes that never fire."""
        return self.joint / self.fires.unsqueeze(-1).clamp_min(1)

    @property
    def recall(self) -> Tensor:
        """``(G, C, F)``; 0 for features that never hold."""
        return self.joint / self.positives.clamp_min(1)

    def best_codes(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """For every feature, the code (group and id) with the highest F1 score:
        ``group (F)``, ``id (F)``, ``precision (F)``, ``recall (F)``."""
        p, r = self.precision, self.recall
        scores = f1(p, r)
        groups, codes, features = scores.shape
        best = scores.reshape(groups * codes, features).argmax(0)
        group, code = best // codes, best % codes
        idx = torch.arange(features)
        return group, code, p[group, code, idx], r[group, code, idx]


def code_feature_counts(
    ids: Tensor, labels: Tensor, num_codes: int, num_features: int
) -> CodeFeatureCounts:
    """Count code firings against features for one site.

    Args:
        ids: ``(tokens, groups, slots)`` code ids, ``-1`` for empty slots.
        labels: ``(tokens,)`` the feature each token has, ``-1`` for none (features exclude
            each other, like "the current state is s").
        num_codes: codes per group.
        num_features: number of features.
    """
    _, groups, slots = ids.shape
    codes = ids.long()
    valid = codes >= 0
    # a code listed twice for one token still fires once
    first = torch.ones_like(valid)
    for j in range(1, slots):
        first[..., j] = (codes[..., j : j + 1] != codes[..., :j]).all(-1)
    keep = valid & first
    flat = flat_code_ids(codes, num_codes)[keep]
    fires = torch.bincount(flat, minlength=groups * num_codes).view(groups, num_codes)
    token_labels = labels.long().view(-1, 1, 1).expand_as(codes)[keep]
    labelled = token_labels >= 0
    joint = torch.bincount(
        flat[labelled] * num_features + token_labels[labelled],
        minlength=groups * num_codes * num_features,
    ).view(groups, num_codes, num_features)
    positives = torch.bincount(labels[labels >= 0].long(), minlength=num_features)
    return CodeFeatureCounts(fires.double(), joint.double(), positives.double())
