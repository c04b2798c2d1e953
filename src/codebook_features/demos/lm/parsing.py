"""Raw source text -> labelled documents: pure functions, no files fetched, no processes run.

Each source is cut at its natural unit (a Brown file, a Bible chapter, a play's scene, a novel's
chapter): that unit is a *document*, which the split keeps whole so that no text is shared by
training and validation. Prose is unwrapped into one line per paragraph (paragraphs separated
by a blank line); verse keeps its lines.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from codebook_features.errors import CodebookError
from codebook_features.persist.files import (
    slug,  # the package's one slug: ids here, names elsewhere
)

BROWN_GENRES = {
    "a": "news",
    "b": "editorial",
    "c": "reviews",
    "d": "religion",
    "e": "hobbies",
    "f": "lore",
    "g": "belles_lettres",
    "h": "government",
    "j": "learned",
    "k": "fiction",
    "l": "mystery",
    "m": "science_fiction",
    "n": "adventure",
    "p": "romance",
    "r": "humor",
}
"""The Brown corpus's category letters (the second letter of a file name) and their labels."""
BROWN_FILE = re.compile(r"^c([a-r])\d\d$")
"""A Brown corpus file name, ``ca01`` ... ``cr09``."""


@dataclass(frozen=True)
class SourceDocument:
    """One source document of the language corpus: the text, its label (a genre or a style)
    and where it came from."""

    text: str
    label: str
    source: str
    id: str
    """Names it within its source (``brown/ca01``, ``bible/genesis-1``), for messages and
    for a stable order."""

    @property
    def words(self) -> int:
        return word_count(self.text)


def word_count(text: str) -> int:
    """Whitespace-separated words: how every count of this package measures text."""
    return len(text.split())


def _paragraphs(lines: Iterable[str]) -> list[str]:
    """Blank-line separated blocks of ``lines``, each unwrapped into one line."""
    paragraphs, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return paragraphs


# ---------------------------------------------------------------- Brown corpus
_NO_SPACE_BEFORE = {",", ".", ";", ":", "?", "!", ")", "''"}
_NO_SPACE_AFTER = {"``", "("}
_QUOTES = {"``": '"', "''": '"'}
_DOUBLED = {";", "?", "!"}
"""Punctuation the corpus often repeats where it cut a sentence (``;/. ;/.``): kept once."""


def _sentences(block: str) -> Iterator[tuple[str, bool]]:
    """The sentences (lines of ``word/tag`` tokens) of a paragraph as text, each with whether
    it is a headline (all tags ``-hl``). A single quote is written ``'`` whether it opens or
    closes: they alternate within the paragraph."""
    single_open = False
    for line in block.splitlines():
        out: list[str] = []
        glue, headline, previous = True, bool(line.split()), ""
        for token in line.split():
            word, _, tag = token.rpartition("/")
            word = word or tag  # a token without a tag
            headline = headline and tag.endswith("-hl")
            if word.startswith("**") or (word == previous and word in _DOUBLED):
                continue  # **zg, **yf: formulas left out of the corpus
            previous = word
            closing = word in _NO_SPACE_BEFORE or (word == "'" and single_open)
            if out and not glue and not closing:
                out.append(" ")
            out.append(_QUOTES.get(word, word))
            single_open ^= word == "'"
            glue = word in _NO_SPACE_AFTER or (word == "'" and single_open)
        if out:
            yield "".join(out), headline


def parse_brown(name: str, tagged: str) -> SourceDocument:
    """One Brown file (``ca01``, POS-tagged, a sentence per line, paragraphs separated by blank
    lines) as plain text: tags stripped, punctuation spaced as in print, ``` `` ''`` as ``"``,
    headlines on their own line; labelled with the file's genre."""
    match = BROWN_FILE.match(name)
    if not match:
        raise CodebookError(f"brown: {name!r} is not a Brown corpus file name (ca01 ... cr09)")
    label = BROWN_GENRES.get(match[1])
    if label is None:
        raise CodebookError(f"brown: {name!r} has no Brown genre letter (a-h, j-n, p, r)")
    paragraphs = []
    for block in re.split(r"\n[ \t]*\n", tagged):
        sentences: list[str] = []
        for text, headline in _sentences(block):
            if headline:  # a headline is a paragraph of its own
                paragraphs += [" ".join(sentences), text] if sentences else [text]
                sentences = []
            else:
                sentences.append(text)
        if sentences:
            paragraphs.append(" ".join(sentences))
    return SourceDocument("\n\n".join(paragraphs), label, "brown", f"brown/{name}")


# ---------------------------------------------------------------- King James Bible
_CHAPTER_HEADING = re.compile(r"^((?:[1-3] )?[A-Z][A-Za-z ]*[a-z]) (\d+)$")
_VERSE = re.compile(r"^\s+\d+ (.*)$")


def parse_bible(dump: str) -> list[SourceDocument]:
    """The output of ``bible -m 8192 gen1:1-rev22:21`` as one document per chapter: the
    ``Book N`` headings and verse numbers dropped, one verse per line (unwrapped)."""
    documents: list[SourceDocument] = []
    chapter: str | None = None
    verses: list[str] = []
    previous = ""

    def close() -> None:
        if chapter is not None and verses:
            documents.append(SourceDocument("\n".join(verses), "bible", "bible", chapter))

    for line in dump.splitlines():
        heading = _CHAPTER_HEADING.match(line)
        if heading and not previous.strip():
            close()
            chapter, verses = f"bible/{slug(heading[1])}-{heading[2]}", []
        elif (verse := _VERSE.match(line)) and chapter is not None:
            verses.append(verse[1].strip())
        elif line.strip() and verses:  # a verse wrapped onto the next line
            verses[-1] += " " + line.strip()
        previous = line
    close()
    if not documents:
        raise CodebookError("bible: no chapters found in the dump (expected `Genesis 1` headings)")
    return documents


# ---------------------------------------------------------------- Shakespeare
_SCENE = re.compile(r"^\s*(?:act\s+\S+\s+)?scene\s+(?:[ivxlc]+|\d+)\b", re.IGNORECASE)
_ACT = re.compile(r"^\s*act\s+(?:[ivx]+|\d+|first|second|third|fourth|fifth)\.?\s*$", re.IGNORECASE)
_THE_END = re.compile(r"^\s*(?:the end|finis)\.?\s*$", re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """``text`` without a Project Gutenberg header and licence, when it has them."""
    start = re.search(r"^\*\*\* ?START OF .*$", text, re.MULTILINE)
    if start:
        text = text[start.end() :]
    end = re.search(r"^\*\*\* ?END OF ", text, re.MULTILINE)
    return text[: end.start()] if end else text


def _verse(lines: list[str]) -> str:
    """Lines stripped of layout indentation, runs of blank lines made one."""
    text = "\n".join(line.strip() for line in lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def parse_shakespeare(name: str, text: str) -> list[SourceDocument]:
    """One ``*_gut.txt`` work: a play as one document per scene (from its ``SCENE`` heading;
    the title and list of persons before the first scene and the act headings dropped), a
    poem as one document."""
    work = slug(name.removesuffix(".txt").removesuffix("_gut"))
    lines = [ln for ln in strip_gutenberg(text).splitlines() if not _ACT.match(ln)]
    lines = [ln for ln in lines if not _THE_END.match(ln)]
    starts = [i for i, line in enumerate(lines) if _SCENE.match(line)]
    if not starts:
        body = _verse(lines)
        return (
            [SourceDocument(body, "shakespeare", "shakespeare", f"shakespeare/{work}")]
            if body
            else []
        )
    documents = []
    for number, (start, end) in enumerate(zip(starts, [*starts[1:], len(lines)], strict=True), 1):
        scene = _verse(lines[start:end])
        documents.append(
            SourceDocument(scene, "shakespeare", "shakespeare", f"shakespeare/{work}/{number}")
        )
    return documents


# ---------------------------------------------------------------- Jane Austen
_AUSTEN_CHAPTER = re.compile(r"^\s*chapter\s+(?:[ivxlc]+|\d+)\.?\s*$", re.IGNORECASE)
_AUSTEN_SKIP = re.compile(r"^\s*volume\s+[ivx]+\.?\s*$", re.IGNORECASE)
_AUSTEN_END = re.compile(r"^\s*(?:the end|finis|a note on the text)\.?\s*$", re.IGNORECASE)


def parse_novel(lines: list[str]) -> list[SourceDocument]:
    """One novel of ``janeaustenr`` (its text, a line per element) as one document per
    chapter: the front matter before the first ``CHAPTER``, the headings, and what follows
    ``THE END`` / ``FINIS`` / ``A NOTE ON THE TEXT`` dropped; paragraphs unwrapped."""
    title = next((line.strip() for line in lines if line.strip()), "")
    novel = slug(title) or "untitled"
    chapters: list[list[str]] = []
    for line in lines:
        if _AUSTEN_END.match(line):
            break
        if _AUSTEN_CHAPTER.match(line):
            chapters.append([])
        elif chapters and not _AUSTEN_SKIP.match(line):
            chapters[-1].append(line)
    documents = []
    for number, chapter in enumerate(chapters, 1):
        text = "\n\n".join(_paragraphs(chapter))
        if text:
            documents.append(SourceDocument(text, "austen", "austen", f"austen/{novel}/{number}"))
    return documents
