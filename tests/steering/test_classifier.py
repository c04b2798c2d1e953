"""The topic classifier on a small hand-made corpus of three topics."""

from __future__ import annotations

import math

import pytest

from codebook_features import CodebookError
from codebook_features.steering.classifier import ClassifierReport, TopicClassifier, word_windows
from codebook_features.steering.metrics import Rate

TRAIN = {
    "weddings": [
        "the bride and groom exchanged rings at the wedding",
        "the wedding guests danced after the vows",
        "she wore a white dress to her wedding ceremony",
        "the groom gave a toast at the reception",
        "they planned the wedding and invited every guest",
        "the bride walked down the aisle with flowers",
    ],
    "cooking": [
        "stir the sauce and add salt to the soup",
        "bake the bread in a hot oven for an hour",
        "chop the onions and fry them in butter",
        "the chef seasoned the soup with pepper",
        "boil the pasta and drain the water",
        "the recipe needs flour sugar and eggs",
    ],
    "space": [
        "the rocket launched toward the moon",
        "astronauts floated inside the space station",
        "the telescope saw a distant galaxy and stars",
        "the planet orbits a bright star",
        "the crew of the rocket landed on mars",
        "a comet passed near the orbit of the planet",
    ],
}
HELD_OUT = [
    ("the bride smiled at the groom", "weddings"),
    ("a beautiful wedding with many guests", "weddings"),
    ("add pepper and salt to the sauce", "cooking"),
    ("bake the cake in the oven", "cooking"),
    ("the rocket flew past the moon to mars", "space"),
    ("stars and planets in the galaxy", "space"),
]


def fitted(seed: int = 0) -> TopicClassifier:
    texts = [t for texts in TRAIN.values() for t in texts]
    labels = [label for label, texts in TRAIN.items() for _ in texts]
    return TopicClassifier.fit(texts, labels, seed=seed)


def test_classifies_held_out_texts() -> None:
    classifier = fitted()
    assert classifier.labels == ("cooking", "space", "weddings")
    texts, labels = zip(*HELD_OUT, strict=True)
    assert classifier.predict(texts) == list(labels)
    assert classifier.predict(["THE BRIDE AND THE GROOM"]) == ["weddings"]  # lowercased
    assert classifier.predict([]) == []
    assert fitted(seed=1).predict(texts) == classifier.predict(texts)


def test_on_topic_rate() -> None:
    classifier = fitted()
    texts = [t for t, _ in HELD_OUT]
    assert classifier.on_topic_rate(texts, "weddings") == Rate(hits=2, total=6)
    assert classifier.on_topic_rate(texts[:2], "weddings") == Rate(hits=2, total=2)
    assert classifier.on_topic_rate(texts[2:], "weddings") == Rate(hits=0, total=4)
    assert classifier.on_topic_rate([], "space") == Rate(hits=0, total=0)


def test_report() -> None:
    classifier = fitted()
    texts, labels = zip(*HELD_OUT, strict=True)
    report = classifier.evaluate(texts, labels)
    assert isinstance(report, ClassifierReport)
    assert report.accuracy == Rate(hits=6, total=6)
    assert {s.precision for s in report.per_label.values()} == {1.0}
    assert report.per_label["space"].support == 2
    # call two cooking texts weddings: the classifier now looks wrong on them
    wrong = ["weddings", "weddings", "weddings", "weddings", "space", "space"]
    report = classifier.evaluate(texts, wrong)
    assert report.accuracy == Rate(hits=4, total=6)
    weddings, cooking = report.per_label["weddings"], report.per_label["cooking"]
    assert (weddings.precision, weddings.recall, weddings.support) == (1.0, 0.5, 4)
    assert cooking.precision == 0.0  # two texts predicted cooking, neither truly is
    assert math.isnan(cooking.recall)  # no text is truly cooking
    data = report.to_dict()
    assert data["accuracy"]["hits"] == 4
    assert data["per_label"]["cooking"] == {"precision": 0.0, "recall": None, "support": 0}


def test_refusals() -> None:
    classifier = fitted()
    with pytest.raises(CodebookError, match="at least 2 different labels"):
        TopicClassifier.fit(["a b", "c d"], ["x", "x"])
    with pytest.raises(CodebookError, match="got none"):
        TopicClassifier.fit([], [])
    with pytest.raises(CodebookError, match="2 texts but 1 labels"):
        TopicClassifier.fit(["a", "b"], ["x"])
    with pytest.raises(CodebookError, match="labels must be strings"):
        TopicClassifier.fit(["a", "b"], [0, 1])  # type: ignore[list-item]
    with pytest.raises(CodebookError, match="could not fit"):
        TopicClassifier.fit(["", "  "], ["x", "y"])
    with pytest.raises(CodebookError, match="could not fit"):
        TopicClassifier.fit(["the and", "of in"], ["x", "y"])  # stop words only
    keeping = TopicClassifier.fit(["the and", "of in"], ["x", "y"], stop_words=None)
    assert keeping.predict(["in of"]) == ["y"]
    with pytest.raises(CodebookError, match=r"unknown label 'sport'.*cooking, space, weddings"):
        classifier.on_topic_rate(["a match"], "sport")
    with pytest.raises(CodebookError, match="unknown label 'sport'"):
        classifier.evaluate(["a match"], ["sport"])
    with pytest.raises(CodebookError, match="held-out"):
        classifier.evaluate([], [])
    with pytest.raises(CodebookError, match="single str"):
        classifier.predict("the bride")


def test_word_windows() -> None:
    texts = ["one two three four five six seven", "short text", "a b c d"]
    windows, labels = word_windows(texts, ["x", "y", "z"], 3)
    # whole windows only: a rest shorter than a window is dropped, a short text kept whole
    assert windows == ["one two three", "four five six", "short text", "a b c"]
    assert labels == ["x", "x", "y", "z"]
    assert word_windows(texts, ["x", "y", "z"], None) == (texts, ["x", "y", "z"])
    assert word_windows(["a  b\n c"], ["x"], 2) == (["a b"], ["x"])  # any whitespace
    with pytest.raises(CodebookError, match="at least 1 word"):
        word_windows(texts, ["x", "y", "z"], 0)


def test_windows_judge_short_texts_as_their_documents() -> None:
    """Learning from windows of long documents keeps what whole documents teach: each window
    of a held-out document is labelled as the document."""
    texts = [" ".join(texts) for texts in TRAIN.values()]  # one long document per topic
    classifier = TopicClassifier.fit(texts, list(TRAIN), window=8)
    held = [" ".join(t for t, label in HELD_OUT if label == name) for name in TRAIN]
    report = classifier.evaluate(held, list(TRAIN), window=4)
    assert report.accuracy.total == sum(len(h.split()) // 4 for h in held)
    assert report.accuracy.rate >= 0.75
