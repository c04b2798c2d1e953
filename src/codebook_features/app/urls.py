"""Stable URLs of the browser's pages, built from what they show (a code's ``SITE/GROUP/ID``
reference, a concept's name, a document's id), so a page can be shared."""

from __future__ import annotations

from urllib.parse import quote

from codebook_features.attach.code_ref import CodeRef


def code_url(ref: CodeRef | str) -> str:
    return "/codes/" + quote(str(ref), safe="/")


def concept_url(name: str) -> str:
    return "/concepts/" + quote(name, safe="")


def document_url(document: int, at: int | None = None) -> str:
    """The document's page; with ``at``, the token at that position marked (and scrolled to,
    when it is not in view)."""
    return f"/documents/{document}" if at is None else f"/documents/{document}?at={at}"
