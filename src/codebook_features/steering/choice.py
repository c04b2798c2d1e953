"""Which settings a steering evaluation reports, chosen on its sweep by a fixed rule.

Reporting each method at its own best sweep point overstates it (the best of many noisy rates
is high by chance) and compares methods at different costs. So the rule is stated before the
results: the code setting with the highest classifier on-topic rate among those whose
perplexity stays under a multiple of the unsteered one, and activation addition at the alpha
whose perplexity is closest to that setting's. A setting whose texts are those of the
unsteered model (alpha 0, or codes that change nothing) is never chosen. The chosen settings
are then generated again from fresh seeds and judged there (:mod:`~.evaluation`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from codebook_features.steering.results import GOAL, ConditionResult, Reported, TopicResult


def choose_codes(
    unsteered: ConditionResult,
    rows: Sequence[ConditionResult],
    changed: Sequence[bool],
    max_ratio: float,
) -> tuple[ConditionResult | None, bool]:
    """``(row, within)``: the code row to report and whether it kept the perplexity limit
    (when none did, the least perplexing changed row, so the table still shows one)."""
    candidates = [r for r, c in zip(rows, changed, strict=True) if c and r.method == "codes"]
    if not candidates:
        return None, False
    limit = max_ratio * unsteered.perplexity
    within = [r for r in candidates if r.perplexity < limit]
    if within:
        return max(within, key=lambda r: (r.classifier.rate, -r.perplexity)), True
    return min(candidates, key=lambda r: r.perplexity), False


def match_activation_addition(
    target: ConditionResult | None,
    rows: Sequence[ConditionResult],
    changed: Sequence[bool],
) -> ConditionResult | None:
    """The activation-addition row whose perplexity is closest (by ratio) to ``target``'s."""
    candidates = [
        r for r, c in zip(rows, changed, strict=True) if c and r.method == "actadd" and r.alpha
    ]
    if target is None or not candidates:
        return None
    return min(candidates, key=lambda r: abs(math.log(r.perplexity / target.perplexity)))


def topic_result(
    unsteered: ConditionResult,
    steered: ConditionResult | None,
    actadd: ConditionResult | None,
    within: bool,
    max_ratio: float,
) -> TopicResult:
    """The reported conditions of one topic (fresh rows), and whether it met :data:`GOAL`."""
    moved = (
        steered is not None
        and unsteered.classifier.rate <= GOAL["from_at_most"]
        and steered.classifier.rate >= GOAL["to_at_least"]
        and steered.classifier.low > unsteered.classifier.high
        and steered.perplexity < max_ratio * unsteered.perplexity
    )
    return TopicResult(
        unsteered=Reported.of(unsteered),
        steered=None if steered is None else Reported.of(steered),
        activation_addition=None if actadd is None else Reported.of(actadd),
        within_perplexity=within,
        moved=moved,
    )
