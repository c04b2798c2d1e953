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
    human: float | None = None,
) -> TopicResult:
    """The reported conditions of one topic (fresh rows), whether it met :data:`GOAL`, and
    if not, why (``human``: the share of the label's held-out human text the judge calls on
    topic)."""
    reasons = shortfall(unsteered, steered, max_ratio, human)
    return TopicResult(
        unsteered=Reported.of(unsteered),
        steered=None if steered is None else Reported.of(steered),
        activation_addition=None if actadd is None else Reported.of(actadd),
        within_perplexity=within,
        moved=not reasons,
        why_not=reasons,
    )


def shortfall(
    unsteered: ConditionResult,
    steered: ConditionResult | None,
    max_ratio: float,
    human: float | None = None,
) -> list[str]:
    """Each part of :data:`GOAL` the reported code setting missed, in a few words with its
    numbers, and what the numbers suggest limits it; empty when the topic moved. Each test is
    written as the goal holding, so a NaN rate or perplexity counts as missing it."""
    low, high = GOAL["from_at_most"], GOAL["to_at_least"]
    if steered is None:
        return ["no code setting changed the texts"]
    reasons = []
    before, after = unsteered.classifier, steered.classifier
    if not before.rate <= low:
        reasons.append(
            f"already {_share(before.rate, low)} on topic unsteered (goal: at most {low:.0%})"
        )
    if not after.rate >= high:
        reasons.append(f"codes reach {_share(after.rate, high)} (goal: {high:.0%})")
        words = steered.regex
        if human is not None and human < high:
            reasons.append(
                f"the judge calls only {_share(human, high)} of the topic's human text on topic"
            )
        elif words is not None and words.rate >= high:
            reasons.append(
                f"the topic's words come ({words.rate:.0%} by the regex) but the judge does "
                "not read the text as the topic"
            )
    elif not after.low > before.high:
        reasons.append("the intervals of unsteered and codes overlap")
    if not steered.perplexity < max_ratio * unsteered.perplexity:
        reasons.append(
            f"perplexity {steered.perplexity:.1f}, not under {max_ratio:g}x the unsteered "
            f"{unsteered.perplexity:.1f}"
        )
    return reasons


def _share(rate: float, goal: float) -> str:
    """A rate for a reason: one decimal where whole percents would read as the goal itself."""
    return f"{rate:.1%}" if f"{rate:.0%}" == f"{goal:.0%}" else f"{rate:.0%}"
