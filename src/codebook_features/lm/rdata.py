"""Character vectors out of an R lazy-load database (``Rdata.rdb``), without R and without
unpickling anything: the one R format the Jane Austen novels ship in.

An ``.rdb`` file is a sequence of objects, each ``[4-byte big-endian length][zlib stream]``;
each stream is an R serialization in XDR (big-endian) form: ``X\\n``, the format version, two R
versions, (version 3) the native encoding, then the object. A character vector (``STRSXP``) is
its flags word, its length, then one ``CHARSXP`` per element: a flags word (type 9, the
encoding in bits 12-27), a length (-1 for ``NA``) and the bytes. Only that is read; other
objects are skipped.
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
    ``None`` when it holds another kind of object."""
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
    if flags & 0xFF != STRSXP:
        return None
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
    vectors, pos = [], 0
    while pos < len(data):
        if len(data) - pos < 5:
            raise CodebookError(f"{where} ends with {len(data) - pos} stray bytes: it is damaged")
        (size,) = struct.unpack_from(">I", data, pos)
        stream = zlib.decompressobj()
        try:
            serialized = stream.decompress(data[pos + 4 :])
        except zlib.error as error:
            raise CodebookError(
                f"{where}: the object at byte {pos} is not zlib data ({error}); only zlib "
                "compressed R databases can be read"
            ) from error
        if not stream.eof or len(serialized) != size:
            raise CodebookError(f"{where}: the object at byte {pos} is truncated")
        vector = character_vector(serialized, f"{where} (object at byte {pos})")
        if vector is not None:
            vectors.append(vector)
        pos = len(data) - len(stream.unused_data)
    return vectors
