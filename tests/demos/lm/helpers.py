"""Samples of every source in its real format, and a cache of them laid out as fetching leaves it
(so tests build corpora offline, with no tool and no network)."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"

ASCII, UTF8, LATIN1 = 1 << 18, 1 << 15, 1 << 14
"""CHARSXP flag bits of R's string encodings (``levels`` bits 6, 3 and 2, shifted by 12)."""

EMMA = [
    "EMMA",
    "",
    "By Jane Austen",
    "",
    "VOLUME I",
    "",
    "CHAPTER I",
    "",
    "",
    "Emma Woodhouse, handsome, clever, and rich, with a comfortable home",
    "and happy disposition, seemed to unite some of the best blessings",
    "of existence.",
    "",
    "She was the youngest of the two daughters of a most affectionate,",
    "indulgent father.",
    "",
    "CHAPTER II",
    "",
    "Mr. Weston was a native of Highbury, and born of a respectable family.",
    None,  # NA in the R vector
    "CHAPTER III",
    "",
    "Mr. Woodhouse was fond of society in his own way.",
    "",
    "FINIS",
    "A line after the end.",
]
PERSUASION = [
    "Persuasion",
    "",
    "Chapter 1",
    "",
    "Sir Walter Elliot, of Kellynch Hall, in Somersetshire, was a man who,",
    "for his own amusement, never took up any book but the Baronetage.",
    "",
    "Chapter 2",
    "",
    "Mr. Shepherd, a civil, cautious lawyer, caf\u00e9 owner of sorts.",
]


def _int(value: int) -> bytes:
    return struct.pack(">i", value)


def serialize_strings(strings: list[str | None], encoding: int = UTF8) -> bytes:
    """A character vector as R's XDR serialization (format 3) writes it."""
    out = [b"X\n", _int(3), _int(0x040201), _int(0x030500), _int(5), b"UTF-8"]
    out += [_int(16), _int(len(strings))]  # STRSXP, its length
    for text in strings:
        if text is None:
            out += [_int(9), _int(-1)]
            continue
        data = text.encode("latin-1" if encoding == LATIN1 else "utf-8")
        out += [_int(9 | (encoding if not text.isascii() else ASCII)), _int(len(data)), data]
    return b"".join(out)


def serialize_integers(values: list[int]) -> bytes:
    """An integer vector (an object the reader skips)."""
    header = [b"X\n", _int(3), _int(0x040201), _int(0x030500), _int(5), b"UTF-8"]
    return b"".join([*header, _int(13), _int(len(values)), *map(_int, values)])


def rdb(objects: list[bytes]) -> bytes:
    """An R lazy-load database: each object as ``[length][zlib stream]``."""
    return b"".join(struct.pack(">I", len(o)) + zlib.compress(o) for o in objects)


def write_rdb(path: Path, novels: list[list[str | None]]) -> Path:
    objects = [serialize_strings(novels[0]), serialize_integers([1, 2, 3])]
    objects += [serialize_strings(novel, LATIN1) for novel in novels[1:]]
    path.write_bytes(rdb(objects))
    return path


def make_cache(root: Path) -> Path:
    """A cache holding every source as fetching leaves it (what ``read`` parses), from the
    samples; Brown twice per genre, since a split needs two documents per label."""
    brown = root / "brown" / "text"
    brown.mkdir(parents=True)
    for name in ("ca01", "ck01"):
        shutil.copy(SAMPLES / "brown" / name, brown / name)
        shutil.copy(SAMPLES / "brown" / name, brown / name.replace("01", "02"))
    (root / "bible").mkdir()
    shutil.copy(SAMPLES / "kjv.txt", root / "bible" / "kjv.txt")
    shutil.copytree(SAMPLES / "shakespeare", root / "shakespeare" / "texts")
    (root / "austen").mkdir()
    write_rdb(root / "austen" / "Rdata.rdb", [EMMA, PERSUASION])
    return root
