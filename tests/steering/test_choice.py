"""The fixed rule that picks the reported steering settings from a sweep."""

from __future__ import annotations

import pytest

from codebook_features.steering.choice import (
    choose_codes,
    match_activation_addition,
    topic_result,
)
from codebook_features.steering.metrics import Rate
from codebook_features.steering.results import ConditionResult


def row(method: str, hits: int, perplexity: float, *, codes=None, alpha=None) -> ConditionResult:
    return ConditionResult(
        concept="sea",
        method=method,
        codes=codes,
        mode="all" if method == "codes" else None,
        positions=None if method == "none" else "all",
        alpha=alpha,
        regex=None,
        classifier=Rate(hits=hits, total=40),
        perplexity=perplexity,
        distinct_1=0.5,
        distinct_2=0.8,
        samples=40,
    )


BASE = row("none", 2, 100.0)


def test_the_best_rate_under_the_perplexity_limit_is_chosen() -> None:
    sweep = [
        row("codes", 10, 110.0, codes=4),
        row("codes", 30, 150.0, codes=8),
        row("codes", 38, 250.0, codes=16),  # the best rate, but over 2x the perplexity
        row("actadd", 40, 120.0, alpha=2.0),  # another method: never the code setting
    ]
    chosen, within = choose_codes(BASE, sweep, [True] * 4, 2.0)
    assert (chosen.codes, within) == (8, True)
    # a tie in rate goes to the lower perplexity
    tie = [row("codes", 30, 180.0, codes=16), row("codes", 30, 150.0, codes=8)]
    assert choose_codes(BASE, tie, [True, True], 2.0)[0].codes == 8


def test_a_setting_that_changed_nothing_is_never_chosen() -> None:
    sweep = [row("codes", 39, 100.0, codes=4), row("codes", 20, 130.0, codes=8)]
    assert choose_codes(BASE, sweep, [False, True], 2.0)[0].codes == 8
    assert choose_codes(BASE, sweep, [False, False], 2.0) == (None, False)


def test_when_no_setting_keeps_the_limit_the_least_perplexing_is_reported() -> None:
    sweep = [row("codes", 30, 260.0, codes=8), row("codes", 35, 400.0, codes=16)]
    chosen, within = choose_codes(BASE, sweep, [True, True], 2.0)
    assert (chosen.codes, within) == (8, False)


def test_activation_addition_is_matched_by_perplexity_not_by_its_best_rate() -> None:
    target = row("codes", 30, 150.0, codes=8)
    sweep = [
        row("actadd", 2, 100.0, alpha=0.0),  # alpha 0 is the unsteered model
        row("actadd", 12, 140.0, alpha=1.0),
        row("actadd", 25, 170.0, alpha=2.0),
        row("actadd", 40, 900.0, alpha=8.0),  # its best rate, at six times the perplexity
    ]
    changed = [False, True, True, True]
    assert match_activation_addition(target, sweep, changed).alpha == 1.0
    assert match_activation_addition(None, sweep, changed) is None
    assert match_activation_addition(target, sweep[:1], [True]) is None  # alpha 0 excluded


@pytest.mark.parametrize(
    ("base_hits", "steered_hits", "perplexity", "moved"),
    [
        (4, 32, 150.0, True),  # 10% -> 80%
        (12, 32, 150.0, False),  # 30% unsteered: already on topic
        (4, 20, 150.0, False),  # 50%: short of 60%
        (4, 32, 210.0, False),  # over 2x the perplexity
    ],
)
def test_moved_means_the_goal(base_hits, steered_hits, perplexity, moved) -> None:
    base = row("none", base_hits, 100.0)
    steered = row("codes", steered_hits, perplexity, codes=8)
    result = topic_result(base, steered, None, True, 2.0)
    assert result.moved is moved
    assert result.steered.classifier == pytest.approx(steered_hits / 40)
    assert result.steered.classifier_ci == [steered.classifier.low, steered.classifier.high]
    assert result.steered.settings == {
        "method": "codes",
        "codes": 8,
        "mode": "all",
        "positions": "all",
    }
    assert result.unsteered.regex is None and result.activation_addition is None


def test_intervals_must_be_apart() -> None:
    # 20% -> 60% of 10 samples: both rates meet the goal, their intervals overlap
    base = ConditionResult(
        **(row("none", 0, 100.0).to_dict() | {"classifier": Rate(hits=2, total=10)})
    )
    steered = ConditionResult(
        **(row("codes", 0, 120.0, codes=8).to_dict() | {"classifier": Rate(hits=6, total=10)})
    )
    assert steered.classifier.low < base.classifier.high
    result = topic_result(base, steered, None, True, 2.0)
    assert not result.moved and result.why_not == ["the intervals of unsteered and codes overlap"]


def test_a_topic_not_moved_says_why() -> None:
    base, steered = row("none", 12, 100.0), row("codes", 20, 210.0, codes=8)
    steered = ConditionResult(**(steered.to_dict() | {"regex": Rate(hits=36, total=40)}))
    result = topic_result(base, steered, None, False, 2.0, human=0.5)
    assert not result.moved
    assert result.why_not == [
        "already 30% on topic unsteered (goal: at most 20%)",
        "codes reach 50% (goal: 60%)",
        "the judge calls only 50% of the topic's human text on topic",
        "perplexity 210.0, not under 2x the unsteered 100.0",
    ]
    judged_well = topic_result(base, steered, None, False, 2.0, human=0.9).why_not
    assert judged_well[2] == (
        "the topic's words come (90% by the regex) but the judge does not read the text as "
        "the topic"
    )
    assert result.verdict.startswith("no: already 30%")
    moved = topic_result(BASE, row("codes", 32, 120.0, codes=8), None, True, 2.0, human=0.9)
    assert moved.moved and moved.why_not == [] and moved.verdict == "yes"
    assert topic_result(BASE, None, None, False, 2.0).why_not == [
        "no code setting changed the texts"
    ]
    # a NaN perplexity (no token scored) is no success; rates that round to the goal say so
    lost = topic_result(BASE, row("codes", 32, float("nan"), codes=8), None, True, 2.0)
    assert not lost.moved and lost.why_not[-1].startswith("perplexity nan")
    short = row("codes", 0, 120.0, codes=8)
    short = ConditionResult(**(short.to_dict() | {"classifier": Rate(hits=119, total=200)}))
    assert topic_result(BASE, short, None, True, 2.0).why_not == ["codes reach 59.5% (goal: 60%)"]
