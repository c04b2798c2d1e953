"""A token's text as a reader should see it: decoding one id alone turns a token that holds
part of a multi-byte character into "�", so such a token is shown by its bytes instead
(``\\xe2\\x80``), decoded where they do form characters."""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

REPLACEMENT = "\ufffd"
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
"""SentencePiece's byte fallback tokens."""


def readable_token(tokenizer: Any, token_id: int) -> str:
    """``tokenizer``'s text for ``token_id``, with stray bytes written as ``\\xNN``."""
    text = tokenizer.decode([token_id])
    if REPLACEMENT not in text:
        return text
    raw = tokenizer.convert_ids_to_tokens(token_id)
    data = _token_bytes(raw) if isinstance(raw, str) else None
    if data is None:
        return text
    return data.decode("utf-8", errors="backslashreplace")


def _token_bytes(raw: str) -> bytes | None:
    """The bytes a byte-level (GPT-2 style) or byte-fallback token stands for, or ``None``."""
    fallback = _BYTE_TOKEN.fullmatch(raw)
    if fallback:
        return bytes([int(fallback.group(1), 16)])
    alphabet = _byte_alphabet()
    if raw and all(c in alphabet for c in raw):
        return bytes(alphabet[c] for c in raw)
    return None


@lru_cache(maxsize=1)
def _byte_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-in character -> the byte it stands for."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {char: byte for byte, char in bytes_to_unicode().items()}
