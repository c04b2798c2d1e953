"""A topic classifier independent of the model under test, to judge whether steering worked.

Judging steered text with the steered model itself would be circular, so this is a plain
bag-of-words model (TF-IDF over words and word pairs, then logistic regression) trained on
labelled text. It is deterministic for a given seed and never pickled: fit it again from its
training texts when needed. :meth:`TopicClassifier.evaluate` says how far to trust it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict

from codebook_features.errors import CodebookError
from codebook_features.settings.base import NonNegativeInt, Record
from codebook_features.steering.metrics import Measure, Rate


class LabelScore(Record):
    """Precision and recall of one label; nan where undefined (nothing predicted or present),
    saved as null."""

    model_config = ConfigDict(frozen=True)

    precision: Measure
    recall: Measure
    support: NonNegativeInt
    """Texts whose true label this is."""


class ClassifierReport(Record):
    """How well the classifier labels held-out text."""

    model_config = ConfigDict(frozen=True)

    accuracy: Rate
    """Correctly labelled texts, with a 95% interval."""
    per_label: dict[str, LabelScore]


class TopicClassifier:
    """Bag-of-words topic classifier; build one with :meth:`fit`."""

    def __init__(self, pipeline: Any) -> None:
        """Wraps a fitted scikit-learn pipeline; use :meth:`fit` rather than this."""
        self._pipeline = pipeline
        self._labels = tuple(str(label) for label in pipeline.classes_)

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        seed: int = 0,
        min_df: int = 1,
        stop_words: str | None = "english",
        window: int | None = None,
    ) -> TopicClassifier:
        """Train on labelled texts (at least two distinct labels).

        Words are lowercased, and scikit-learn's English stop words are dropped (``stop_words``
        None keeps them, e.g. for other languages): in short texts, words like "and" or "in"
        otherwise outvote the few topic words. Words and word pairs are weighted by sublinear
        TF-IDF, so a generated text that repeats a word does not dominate. Classes are
        balanced, so a topic with fewer examples is not predicted less for that reason.
        ``min_df`` drops features seen in fewer training texts. ``window``: learn from
        windows of this many words of the texts (:func:`word_windows`), for judging texts of
        about that length.
        """
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        texts = _texts(texts, "fit")
        if not texts:
            raise CodebookError("fit needs labelled texts, got none: give texts and their labels")
        labels = list(labels)
        if len(labels) != len(texts):
            raise CodebookError(f"fit got {len(texts)} texts but {len(labels)} labels")
        texts, labels = word_windows(texts, labels, window)
        if not all(isinstance(label, str) for label in labels):
            raise CodebookError("labels must be strings, e.g. 'weddings' or 'other'")
        if len(set(labels)) < 2:
            raise CodebookError(
                f"fit needs at least 2 different labels, got {sorted(set(labels))}: add texts "
                "of another topic (e.g. 'other')"
            )
        vectorizer = TfidfVectorizer(
            lowercase=True,
            token_pattern=r"(?u)\b\w+\b",
            ngram_range=(1, 2),
            sublinear_tf=True,
            min_df=min_df,
            stop_words=stop_words,
        )
        classifier = LogisticRegression(
            C=10.0, class_weight="balanced", max_iter=1000, random_state=seed
        )
        pipeline = make_pipeline(vectorizer, classifier)
        try:
            pipeline.fit(texts, labels)
        except ValueError as error:  # e.g. an empty vocabulary: no (non-stop) words at all
            raise CodebookError(f"could not fit the topic classifier: {error}") from error
        return cls(pipeline)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels it can predict, sorted."""
        return self._labels

    def predict(self, texts: Sequence[str]) -> list[str]:
        """The most likely label of each text."""
        texts = _texts(texts, "predict")
        if not texts:
            return []
        return [str(label) for label in self._pipeline.predict(texts)]

    def on_topic_rate(self, texts: Sequence[str], label: str) -> Rate:
        """The share of texts predicted as ``label`` (0 of 0 for no texts)."""
        self._check_label(label, "on_topic_rate")
        predicted = self.predict(texts)
        return Rate(hits=sum(p == label for p in predicted), total=len(predicted))

    def evaluate(
        self, texts: Sequence[str], labels: Sequence[str], *, window: int | None = None
    ) -> ClassifierReport:
        """Accuracy and per-label precision/recall on held-out labelled texts (with
        ``window``, on windows of that many words of them, as :meth:`fit` learns)."""
        texts = _texts(texts, "evaluate")
        labels = list(labels)
        if not texts:
            raise CodebookError("evaluate needs held-out labelled texts, got none")
        if len(labels) != len(texts):
            raise CodebookError(f"evaluate got {len(texts)} texts but {len(labels)} labels")
        texts, labels = word_windows(texts, labels, window)
        for label in set(labels):
            self._check_label(label, "evaluate")
        predicted = self.predict(texts)
        pairs = list(zip(labels, predicted, strict=True))
        per_label = {}
        for label in self._labels:
            true_positive = sum(t == label and p == label for t, p in pairs)
            predicted_n = sum(p == label for _, p in pairs)
            support = sum(t == label for t, _ in pairs)
            per_label[label] = LabelScore(
                precision=true_positive / predicted_n if predicted_n else math.nan,
                recall=true_positive / support if support else math.nan,
                support=support,
            )
        accuracy = Rate(hits=sum(t == p for t, p in pairs), total=len(pairs))
        return ClassifierReport(accuracy=accuracy, per_label=per_label)

    def _check_label(self, label: Any, where: str) -> None:
        if label not in self._labels:
            raise CodebookError(
                f"{where}: unknown label {label!r}; the classifier knows "
                f"{', '.join(self._labels)} (fit it with texts of that label)"
            )


def word_windows(
    texts: Sequence[str], labels: Sequence[str], words: int | None
) -> tuple[list[str], list[str]]:
    """Each text cut into consecutive windows of ``words`` words (a shorter rest is dropped,
    a shorter text kept whole, an empty one dropped), with its label; ``words`` None keeps the
    texts whole.

    A classifier that judges short generations should learn from, and be checked on, texts
    of their length: a bag of words learned from 500-word documents recognises a label less
    often in 45 words, and its recall on windows of genuine text says how often real text of
    the label would count as on topic."""
    if words is None:
        return list(texts), list(labels)
    if words < 1:
        raise CodebookError(f"windows need at least 1 word, got {words}")
    out_texts: list[str] = []
    out_labels: list[str] = []
    for text, label in zip(texts, labels, strict=True):
        split = text.split()
        if not split:  # no words: nothing to learn or judge
            continue
        starts = range(0, len(split) - words + 1, words) if len(split) >= words else [0]
        for start in starts:
            out_texts.append(" ".join(split[start : start + words]))
            out_labels.append(label)
    return out_texts, out_labels


def _texts(texts: Any, where: str) -> list[str]:
    if isinstance(texts, str):
        raise CodebookError(f"{where} takes a list of texts, got a single str")
    texts = list(texts)
    for text in texts:
        if not isinstance(text, str):
            raise CodebookError(f"{where} takes texts (str), got {type(text).__name__}")
    return texts
