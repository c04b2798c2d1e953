"""Topics chosen by a rule: the labels a classifier recognises best, and their regexes."""

from __future__ import annotations

import math
import re

import pytest

from codebook_features.errors import CodebookError
from codebook_features.steering.classifier import ClassifierReport, LabelScore
from codebook_features.steering.metrics import Rate
from codebook_features.steering.topics import (
    best_recognised,
    distinctive_words,
    leans,
    opening_lean,
    words_regex,
)


def test_best_recognised_ranks_labels_by_f1_and_leaves_out_unseen_ones() -> None:
    report = ClassifierReport(
        accuracy=Rate(hits=5, total=10),
        per_label={
            "a": LabelScore(precision=1.0, recall=0.5, support=4),  # F1 2/3
            "b": LabelScore(precision=0.9, recall=0.9, support=4),  # 0.9
            "c": LabelScore(precision=math.nan, recall=0.0, support=2),  # never predicted
            "d": LabelScore(precision=0.0, recall=math.nan, support=0),  # not in the texts
            "e": LabelScore(precision=0.5, recall=1.0, support=3),  # 2/3, after "a" by name
        },
    )
    ranked = best_recognised(report, 2)
    assert [label for label, _ in ranked] == ["b", "a"]
    assert ranked[0][1] == pytest.approx(0.9)
    assert [label for label, _ in best_recognised(report, 10)] == ["b", "a", "e"]


def test_distinctive_words_are_common_in_the_label_and_rarer_elsewhere() -> None:
    texts = [
        "the ship sailed over the waves with the crew",
        "the crew saw waves and a ship near the harbour",
        "a ship in the harbour , waves again , Nemo",
        "the farm had a barn and the cows ate the hay",
        "the barn of the farm , the cows , the crew",
        "the hay in the barn and the farm dog",
    ]
    labels = ["sea"] * 3 + ["farm"] * 3
    words = distinctive_words(texts, labels, "sea", 3)
    # in every sea text and in no farm text; "the" is everywhere, "crew" on both sides,
    # "nemo" in one text only, and "a" is too short
    assert words == ["ship", "waves", "harbour"]
    assert re.search(words_regex(words), "Big WAVES".lower())
    assert not re.search(words_regex(words), "shipping")


def test_mistakes() -> None:
    with pytest.raises(CodebookError, match="2 texts but 1 labels"):
        distinctive_words(["a b", "c d"], ["x"], "x")
    with pytest.raises(CodebookError, match="no text labelled 'y' has words"):
        distinctive_words(["alpha beta"], ["x"], "y")
    with pytest.raises(CodebookError, match="at least one word"):
        words_regex([])


def test_opening_lean_names_the_label_whose_sentences_start_with_the_prompt() -> None:
    texts = [
        "Then said he unto them. Then went they out. And it was so.",
        "The rain fell. Then we left. The end came.",
        '"Then what?" she asked. Thence they rode. It was late.',
    ]
    labels = ["bible", "news", "novel"]
    label, share = opening_lean(texts, labels, "Then said")  # its first word counts
    assert label == "bible"
    # rates per label's sentences: bible 2/3, news 1/3, novel 1/3 (quotes stripped, "Thence"
    # is not "Then")
    assert share == pytest.approx((2 / 3) / (2 / 3 + 1 / 3 + 1 / 3))
    assert opening_lean(texts, labels, "Meanwhile") is None


def test_opening_lean_counts_each_labels_sentences_apart() -> None:
    # the large label starts as many of its sentences with "The" as the small one: no lean
    texts = ["The a. The b. X c. Y d.", "The e. Z f."]
    label, share = opening_lean(texts, ["large", "small"], "The")
    assert share == pytest.approx(0.5)
    assert label == "large"  # ties go to the first label by name
    with pytest.raises(CodebookError, match="has no word"):
        opening_lean(texts, ["large", "small"], " ... ")
    with pytest.raises(CodebookError, match="2 texts but 1 labels"):
        opening_lean(texts, ["large"], "The")


def test_a_prompts_first_word_is_found_without_its_punctuation() -> None:
    texts = ["Well, then. Well done. No.", "Yes. No. Maybe."]
    assert opening_lean(texts, ["a", "b"], '"Well, said he') == ("a", pytest.approx(1.0))
    assert opening_lean(texts, ["a", "b"], "Wel") is None  # whole words only


def test_leaning_needs_more_than_twice_an_even_share_with_few_labels() -> None:
    assert leans(0.39, 18) and not leans(0.12, 18)  # 'Then' and 'The' in the demo's corpus
    assert not leans(0.34, 3)  # three labels: an even opening already holds a third each
    assert leans(0.7, 3) and not leans(1.0, 1)
