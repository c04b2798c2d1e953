"""Site names without a model: the site kinds, ``layers.<i>.<kind>`` names, globs over them
and their natural order. Torch-free, so settings, code references and stores can name sites
without importing torch (:mod:`~codebook_features.attach.sites` resolves them in a model)."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import Any

from codebook_features.errors import CodebookError

SITE_KINDS: tuple[str, ...] = ("attn_heads", "attn", "mlp", "mlp_hidden", "block")


def site_name(layer: int, kind: str) -> str:
    return f"layers.{layer}.{kind}"


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders the numbers inside names by value (``layers.2`` < ``layers.10``)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def is_site_pattern(text: str) -> bool:
    """Whether ``text`` names sites by a glob (``*``, ``?`` or ``[...]``)."""
    return any(c in text for c in "*?[")


def site_matches(pattern: str, name: str) -> bool:
    """Whether the site ``name`` is meant by ``pattern``: the name itself, its kind, or a glob."""
    if pattern == name or pattern == name.rsplit(".", 1)[-1]:
        return True
    return is_site_pattern(pattern) and fnmatch.fnmatchcase(name, pattern)


def match_sites(patterns: str | Iterable[str], available: Sequence[str]) -> list[str]:
    """The sites of ``available`` that ``patterns`` name (full names, kinds or globs), without
    repeats and in natural order. A pattern that matches nothing is an error listing what is
    there, so a typo never silently selects nothing."""
    wanted = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen: set[str] = set()
    for pattern in wanted:
        if not isinstance(pattern, str):
            raise CodebookError(f"a site must be given as a string, got {pattern!r}")
        hits = [name for name in available if site_matches(pattern, name)]
        if not hits:
            raise CodebookError(
                f"no site matches {pattern!r}; this model has: {describe_sites(available)}"
            )
        chosen.update(hits)
    return sorted(chosen, key=natural_key)


def describe_sites(names: Iterable[str]) -> str:
    """All site names in natural order, for error messages."""
    ordered = sorted(names, key=natural_key)
    return ", ".join(ordered) if ordered else "no sites"
