"""Character vectors out of an R lazy-load database (``Rdata.rdb``), without R and without
unpickling anything: the one R format the Jane Austen novels ship in.

An ``.rdb`` file is a sequence of objects, each ``[4-byte big-endian length][zlib stream]``;
each stream is an R serialization in XDR (big-endian) form: ``X\\n``, the format version, two R
versions, (version 3) the native encoding, then the object. A character vector (``STRSXP``) is
its flags word, its length, then one ``CHARSXP`` per element: a flags word (type 9, the
encoding in bits 12-27), a length (-1 for ``NA``) and the bytes. Only that is read. Objects
that cannot hold text (numbers, logicals, raw bytes, ``NULL``) are skipped; any other kind (a
list, a data frame, an ALTREP vector...) is refused, since a text in it would silently be lost.
"""

from __future__ import annotations

import struct
import zlib

from codebook_features.errors import CodebookError

STRSXP = 16
"""R's type code of a character vector."""
CHARSXP = 9
"""R's type code of one string."""
LATIN1 = 1 << (12 + 2)
"""The flags bit of a Latin-1 encoded string (R's ``LATIN1_MASK`` in the ``levels`` bits)."""
NO_TEXT = frozenset({0, 254, 10, 13, 14, 15, 24})
"""R's type codes of objects that cannot hold text, which are skipped: ``NULL`` (0, and 254 as
serialized), logical, integer, double, complex and raw vectors."""
TYPE_NAMES = {
    2: "pairlist",
    3: "function",
    4: "environment",
    6: "call",
    19: "list (or data frame)",
    20: "expression",
    25: "S4 object",
    238: "ALTREP vector",
}
"""Names of other R type codes, for messages."""
BLOCK = 1 << 16
"""Compressed bytes fed to zlib at a time (so that reading never copies the rest of the file)."""


class _Reader:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def int(self) -> int:
        if self.pos + 4 > len(self.data):
            raise CodebookError(f"{self.where} ends inside an object: the file is damaged")
        (value,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return value

    def bytes(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CodebookError(f"{self.where} ends inside a string: the file is damaged")
        value = self.data[self.pos : self.pos + n]
        self.pos += n
        return value


def character_vector(serialized: bytes, where: str = "R data") -> list[str | None] | None:
    """The character vector an XDR R serialization holds (``None`` for ``NA`` elements), or
    ``None`` when it holds an object that cannot hold text; any other object is refused (a
    novel in it would otherwise go missing without a word)."""
    if not serialized.startswith(b"X\n"):
        raise CodebookError(f"{where} is not an R serialization in XDR form (no 'X\\n' header)")
    reader = _Reader(serialized, where)
    reader.pos = 2
    version = reader.int()
    reader.int(), reader.int()  # the writer's and the oldest reader's R versions
    if version == 3:
        reader.bytes(reader.int())  # the native encoding, such as UTF-8
    elif version != 2:
        raise CodebookError(f"{where} uses R serialization version {version} (known: 2, 3)")
    flags = reader.int()
    kind = flags & 0xFF
    if kind in NO_TEXT:
        return None
    if kind != STRSXP:
        name = TYPE_NAMES.get(kind, "unknown type")
        raise CodebookError(
            f"{where} holds an R {name} (type code {kind}), which this reader cannot read (it "
            "reads character vectors only), so a text in it would be lost"
        )
    length = reader.int()
    if length == -1:  # a long vector: the length follows as two 32-bit halves
        length = (reader.int() << 32) + reader.int()
    strings: list[str | None] = []
    for _ in range(length):
        flags, size = reader.int(), reader.int()
        if flags & 0xFF != CHARSXP:
            raise CodebookError(f"{where}: a character vector holds a non-string (type {flags})")
        if size == -1:
            strings.append(None)
            continue
        raw = reader.bytes(size)
        strings.append(raw.decode("latin-1" if flags & LATIN1 else "utf-8", "replace"))
    return strings


def rdb_character_vectors(data: bytes, where: str = "Rdata.rdb") -> list[list[str | None]]:
    """Every character vector of an ``.rdb`` file, in file order."""
    vectors, pos, view = [], 0, memoryview(data)
    while pos < len(data):
        if len(data) - pos < 5:
            raise CodebookError(f"{where} ends with {len(data) - pos} stray bytes: it is damaged")
        (size,) = struct.unpack_from(">I", data, pos)
        serialized, end = _inflate(view, pos + 4, size, f"{where}: the object at byte {pos}")
        vector = character_vector(serialized, f"{where} (object at byte {pos})")
        if vector is not None:
            vectors.append(vector)
        pos = end
    return vectors


def _inflate(view: memoryview, start: int, size: int, what: str) -> tuple[bytes, int]:
    """The zlib stream at ``start`` of ``view`` (``size`` bytes once inflated) and where it
    ends. Fed a block at a time and stopped one byte past ``size``, so that neither the rest of
    the file is copied nor a damaged length or stream inflates more than it should."""
    stream, parts, out, at = zlib.decompressobj(), [], 0, start
    try:
        while not stream.eof and at < len(view):
            block = view[at : at + BLOCK]
            parts.append(stream.decompress(block, size + 1 - out))
            out += len(parts[-1])
            at += len(block) - len(stream.unconsumed_tail)
            if out > size:
                break
    except zlib.error as error:
        raise CodebookError(
            f"{what} is not zlib data ({error}); only zlib compressed R databases can be read"
        ) from error
    if not stream.eof or out != size:
        raise CodebookError(f"{what} is truncated or damaged")
    return b"".join(parts), at - len(stream.unused_data)
