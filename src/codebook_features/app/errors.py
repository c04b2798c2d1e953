"""Errors a request can end in: a ``CodebookError`` (one line saying what to do) with the HTTP
status the API answers it with."""

from __future__ import annotations

from codebook_features.errors import CodebookError


class RequestError(CodebookError):
    """A request the app cannot answer as asked."""

    status = 400


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    """The request needs something the app lacks (the model), or clashes with what exists."""

    status = 409


class Busy(RequestError):
    status = 429


def status_of(error: CodebookError) -> int:
    """Our own request errors carry their status; every other ``CodebookError`` is a 400."""
    return error.status if isinstance(error, RequestError) else 400
