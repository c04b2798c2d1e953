"""Topics to steer toward, chosen by a rule fixed before any generation.

Picking topics after seeing which ones steer flatters any method. So a demo states a rule:
the labels that the topic classifier recognises best in human text it did not learn from (a
topic the judge cannot tell apart in real documents cannot be measured in generated ones),
each with the paper's regex measure built from the label's most over-represented words.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

from codebook_features.errors import CodebookError
from codebook_features.search.scores import f1
from codebook_features.steering.classifier import ClassifierReport

WORD = re.compile(r"[a-z]{3,}")
"""Words of a topic regex: lowercase letters, at least three (no names of one letter, no
numbers)."""


def best_recognised(report: ClassifierReport, count: int) -> list[tuple[str, float]]:
    """The ``count`` labels with the highest F1 in ``report`` (ties by name), with their F1;
    labels the report never saw are left out."""
    scored = []
    for label, score in report.per_label.items():
        p, r = score.precision, score.recall
        if score.support and p == p and r == r:
            scored.append((label, f1(p, r)))
    scored.sort(key=lambda item: (-item[1], item[0]))
    return scored[:count]


def distinctive_words(
    texts: Sequence[str],
    labels: Sequence[str],
    label: str,
    count: int = 6,
    *,
    min_ratio: float = 3.0,
    smoothing: float = 1.0,
) -> list[str]:
    """The ``count`` words found in most of ``label``'s texts among those at least
    ``min_ratio`` times as frequent there as in the other texts (shares of each side's
    words, add-``smoothing``). Ranking by spread over the label's texts rather than by the
    ratio keeps common topic words and leaves out names that one text repeats."""
    if len(texts) != len(labels):
        raise CodebookError(f"got {len(texts)} texts but {len(labels)} labels")
    inside, outside, spread = Counter[str](), Counter[str](), Counter[str]()
    for text, mine in zip(texts, labels, strict=True):
        found = WORD.findall(text.lower())
        (inside if mine == label else outside).update(found)
        if mine == label:
            spread.update(set(found))
    if not inside:
        raise CodebookError(f"no text labelled {label!r} has words")
    vocabulary = len(inside.keys() | outside.keys())
    a_total, b_total = sum(inside.values()), sum(outside.values())

    def ratio(word: str) -> float:
        a = (inside[word] + smoothing) / (a_total + smoothing * vocabulary)
        b = (outside[word] + smoothing) / (b_total + smoothing * vocabulary)
        return a / b

    kept = [w for w in inside if ratio(w) >= min_ratio]
    if not kept:
        raise CodebookError(
            f"no word is {min_ratio:g}x as frequent in the texts labelled {label!r} as in the "
            "others: give that topic a regex of its own"
        )
    kept.sort(key=lambda w: (-spread[w], -ratio(w), w))
    return kept[:count]


def words_regex(words: Sequence[str]) -> str:
    """A regex matching any of ``words`` as a whole word."""
    if not words:
        raise CodebookError("a topic regex needs at least one word")
    return r"\b(" + "|".join(re.escape(w) for w in words) + r")\b"


SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n+")
FIRST_WORD = re.compile(r"\w+")
LEANING_SHARE = 0.25
"""An opening leans to a label when that label holds more than this share of the word's
sentence-start rates summed over labels (each label's sentences counted apart, so a large
label does not lean by its size), and more than twice its even share (with few labels)."""


def leans(share: float, labels: int) -> bool:
    """Whether an opening whose top label holds ``share`` of the rates of ``labels`` labels
    leans to it (:data:`LEANING_SHARE`)."""
    return share > max(LEANING_SHARE, 2 / max(labels, 1))


def opening_lean(
    texts: Sequence[str], labels: Sequence[str], prompt: str
) -> tuple[str, float] | None:
    """The label whose sentences most often start with the prompt's first word (its letters
    and digits, without quotes or punctuation), and its share of the rates of all labels;
    None when no sentence does.

    An unsteered model continues a prompt the way its corpus does: if one label's sentences
    start with "Then" far more often than the others' (the Bible's "Then said ..."), texts
    from that prompt lean to it before any code is forced, and the label cannot show steering.
    The first word, rather than the whole prompt, is counted because longer openings are too
    rare in a small corpus to estimate."""
    return opening_leans(texts, labels, [prompt])[prompt]


def opening_leans(
    texts: Sequence[str], labels: Sequence[str], prompts: Sequence[str]
) -> dict[str, tuple[str, float] | None]:
    """:func:`opening_lean` of each prompt, from one pass over the texts' sentences."""
    if len(texts) != len(labels):
        raise CodebookError(f"got {len(texts)} texts but {len(labels)} labels")
    firsts = {}
    for prompt in prompts:
        words = FIRST_WORD.findall(prompt)
        if not words:
            raise CodebookError(f"the prompt {prompt!r} has no word")
        firsts[prompt] = words[0]
    starts: Counter[tuple[str, str]] = Counter()  # (label, a sentence's first word)
    sentences = Counter[str]()
    for text, label in zip(texts, labels, strict=True):
        for sentence in SENTENCE_BREAK.split(text):
            sentence = sentence.strip().lstrip("\"'“‘(")
            if sentence:
                sentences[label] += 1
                first = FIRST_WORD.match(sentence)
                if first:
                    starts[label, first.group()] += 1
    found: dict[str, tuple[str, float] | None] = {}
    for prompt, word in firsts.items():
        rates = {label: starts[label, word] / sentences[label] for label in sentences}
        total = sum(rates.values())
        label = max(sorted(rates), key=lambda name: rates[name]) if total else None
        found[prompt] = None if label is None else (label, rates[label] / total)
    return found
