"""Each source's raw format -> documents, on small samples in the real formats."""

from __future__ import annotations

import random
import re
import struct
import zlib

import pytest

from codebook_features.demos.lm import rdata
from codebook_features.demos.lm.corpus_sources import read_austen, read_brown, read_shakespeare
from codebook_features.demos.lm.parsing import (
    parse_bible,
    parse_brown,
    parse_novel,
    parse_shakespeare,
    strip_gutenberg,
)
from codebook_features.demos.lm.rdata import rdb_character_vectors
from codebook_features.errors import CodebookError
from tests.demos.lm.helpers import (
    EMMA,
    LATIN1,
    PERSUASION,
    SAMPLES,
    rdb,
    serialize_strings,
    write_rdb,
)


def test_brown_tags_stripped_and_text_spaced_as_printed() -> None:
    news = parse_brown("ca01", (SAMPLES / "brown" / "ca01").read_text())
    assert (news.label, news.source, news.id) == ("news", "brown", "brown/ca01")
    paragraphs = news.text.split("\n\n")
    assert paragraphs[0] == (
        "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
        'election produced "no evidence" that any irregularities took place.'
    )
    # parentheses hug their words; the corpus's doubled ";" is kept once; sentences joined
    assert paragraphs[1] == (
        "The jury said (in term-end presentments) that the election was conducted well; "
        "the City of Atlanta was praised."
    )
    assert paragraphs[2] == "Jury Praised"  # a headline is a paragraph of its own
    assert paragraphs[3] == (
        '"Only a handful of \'such\' reports was received", the jury said, "considering the '
        'widespread interest".'
    )
    assert "/" not in news.text


def test_brown_genre_from_the_file_name() -> None:
    fiction = parse_brown("ck01", (SAMPLES / "brown" / "ck01").read_text())
    assert fiction.label == "fiction"
    assert fiction.text.startswith("Thirty-three\n\nScotty did not go back to school.")
    assert "doctor -- Mr. McKinley" in fiction.text
    assert '"Are you coming, Scotty?' in fiction.text and "??" not in fiction.text
    assert [d.label for d in read_brown(SAMPLES / "brown")] == ["news", "fiction"]
    with pytest.raises(CodebookError, match="not a Brown corpus file"):
        parse_brown("README", "")
    with pytest.raises(CodebookError, match="genre letter"):
        parse_brown("ci01", "")  # there is no category i


def test_bible_chapters_without_headings_or_verse_numbers() -> None:
    chapters = parse_bible((SAMPLES / "kjv.txt").read_text())
    assert [c.id for c in chapters] == [
        "bible/genesis-1",
        "bible/genesis-2",
        "bible/1-samuel-3",
        "bible/song-of-solomon-1",
    ]
    assert {c.label for c in chapters} == {"bible"}
    verses = chapters[0].text.split("\n")
    assert verses[0] == "In the beginning God created the heaven and the earth."
    assert verses[1].endswith(
        "void; and darkness was upon the face of the deep. And the Spirit "
        "of God moved upon the face of the waters."
    )  # unwrapped
    assert len(verses) == 3
    assert chapters[2].text.split("\n")[1].startswith("And the LORD came")  # "10 " stripped
    with pytest.raises(CodebookError, match="no chapters"):
        parse_bible("not a bible dump\n")


def test_shakespeare_scenes_and_poems() -> None:
    scenes = parse_shakespeare(
        "hamlet_gut.txt", (SAMPLES / "shakespeare" / "hamlet_gut.txt").read_text()
    )
    assert [s.id for s in scenes] == [f"shakespeare/hamlet/{i}" for i in (1, 2, 3)]
    assert scenes[0].text.startswith("Scene I. Elsinore. A platform before the Castle.")
    assert "PERSONS REPRESENTED" not in "".join(s.text for s in scenes)  # front matter dropped
    assert "ACT II" not in scenes[1].text and "THE END" not in scenes[2].text
    assert "Though yet of Hamlet our dear brother's death\nThe memory be green" in scenes[1].text
    works = read_shakespeare(SAMPLES / "shakespeare")  # the folio variant (_gut_f) is left out
    assert [w.id for w in works] == [*(s.id for s in scenes), "shakespeare/phoenix-and-the-turtle"]
    poem = works[-1].text
    assert poem.startswith("THE PHOENIX AND THE TURTLE") and "Gutenberg" not in poem
    assert poem.endswith("To this troop come thou not near!")


def test_gutenberg_boilerplate() -> None:
    text = "header\n*** START OF THIS EBOOK X ***\nbody\n*** END OF THIS EBOOK X ***\nlicence"
    assert strip_gutenberg(text).strip() == "body"
    assert strip_gutenberg("no markers") == "no markers"


def test_austen_rdb_read_with_our_own_xdr_reader(tmp_path) -> None:
    path = write_rdb(tmp_path / "Rdata.rdb", [EMMA, PERSUASION])
    vectors = rdb_character_vectors(path.read_bytes())
    assert vectors == [EMMA, PERSUASION]  # the integer vector between them is skipped
    chapters = read_austen(path)
    assert [c.id for c in chapters] == [
        "austen/emma/1",
        "austen/emma/2",
        "austen/emma/3",
        "austen/persuasion/1",
        "austen/persuasion/2",
    ]
    assert chapters[0].text.split("\n\n") == [
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy "
        "disposition, seemed to unite some of the best blessings of existence.",
        "She was the youngest of the two daughters of a most affectionate, indulgent father.",
    ]
    assert "FINIS" not in chapters[2].text and "after the end" not in chapters[2].text
    assert "café" in chapters[-1].text  # a Latin-1 string decoded as such
    assert {c.label for c in chapters} == {"austen"}


def test_austen_damaged_files_are_refused() -> None:
    good = rdb([serialize_strings(["a", "b"], LATIN1)])
    with pytest.raises(CodebookError, match=r"truncated|damaged"):
        rdb_character_vectors(good[:-3])
    with pytest.raises(CodebookError, match="not zlib"):
        rdb_character_vectors(struct.pack(">I", 4) + b"nope")
    with pytest.raises(CodebookError, match="XDR"):
        rdb_character_vectors(struct.pack(">I", 4) + zlib.compress(b"RDA3"))
    short = serialize_strings(["abc"])[:-2]  # the string's bytes cut short
    with pytest.raises(CodebookError, match="damaged"):
        rdb_character_vectors(struct.pack(">I", len(short)) + zlib.compress(short))


def test_novel_without_chapters_gives_nothing() -> None:
    assert parse_novel(["A TITLE", "", "Some front matter."]) == []


def _serialized(kind: int, *ints: int) -> bytes:
    """An XDR R serialization (format 3) of an object of type ``kind``, then ``ints``."""
    header = [b"X\n", *(struct.pack(">i", v) for v in (3, 0x040201, 0x030500, 5)), b"UTF-8"]
    return b"".join([*header, *(struct.pack(">i", v) for v in (kind, *ints))])


@pytest.mark.parametrize(
    ("kind", "name"), [(19, "list (or data frame)"), (238, "ALTREP vector"), (99, "unknown type")]
)
def test_objects_that_may_hold_text_are_refused_not_skipped(tmp_path, kind, name) -> None:
    data = rdb([serialize_strings(EMMA), _serialized(kind, 0)])
    with pytest.raises(CodebookError, match=rf"holds an R {re.escape(name)} \(type code {kind}\)"):
        rdb_character_vectors(data)
    path = tmp_path / "Rdata.rdb"
    path.write_bytes(data)
    with pytest.raises(CodebookError) as error:
        read_austen(path)
    message = str(error.value)
    assert message.startswith(f"austen: {path} (object at byte ")
    assert f"delete {path} to fetch it again" in message and "--sources" in message


def test_objects_that_cannot_hold_text_are_skipped() -> None:
    others = [_serialized(kind, 0) for kind in (10, 13, 14, 15, 24)] + [_serialized(254)]
    assert rdb_character_vectors(rdb([*others, serialize_strings(["a"])])) == [["a"]]


def test_large_objects_read_across_blocks() -> None:
    """Objects whose compressed streams span several of the reader's blocks, back to back."""
    rng = random.Random(0)
    novels = [[rng.randbytes(30_000).hex() for _ in range(4)] for _ in range(3)]
    data = rdb([serialize_strings(novel) for novel in novels])
    assert len(data) > 3 * rdata.BLOCK
    assert rdb_character_vectors(data) == novels


def test_object_length_that_disagrees_with_its_stream_is_refused() -> None:
    good = serialize_strings(["a", "b"])
    for size in (len(good) - 1, len(good) + 1):
        damaged = struct.pack(">I", size) + zlib.compress(good)
        with pytest.raises(CodebookError, match="object at byte 0 is truncated or damaged"):
            rdb_character_vectors(damaged)
