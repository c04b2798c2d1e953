"""One name for one code: its site, its group (head) and its id, as a value and as a string.

Search results, store rows, concept files, URLs and command-line options all name a code the same
way, ``SITE/GROUP/ID`` (``layers.3.attn_heads/2/417``), so a code found in one place can be
used in any other without translation. Words: a code's *id* is its index in its group's
codebook; the learned vectors are ``Codebook.vectors``.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from codebook_features.attach.site_names import natural_key
from codebook_features.errors import CodebookError

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel

_FORM = re.compile(r"^(?P<site>[^/\s]+)/(?P<group>\d+)/(?P<id>\d+)$")
EXAMPLE = "layers.3.attn_heads/2/417"


@dataclass(frozen=True)
class CodeRef:
    """Code ``id`` of group ``group`` at site ``site``; ``str()`` gives ``SITE/GROUP/ID``."""

    site: str
    group: int
    id: int

    def __post_init__(self) -> None:
        if not isinstance(self.site, str) or not self.site or "/" in self.site:
            raise CodebookError(f"a code's site must be a site name without '/', got {self.site!r}")
        for name in ("group", "id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise CodebookError(f"a code's {name} must be an integer >= 0, got {value!r}")
            object.__setattr__(self, name, int(value))

    def __str__(self) -> str:
        return f"{self.site}/{self.group}/{self.id}"

    @classmethod
    def parse(cls, text: str) -> CodeRef:
        """The code named by ``SITE/GROUP/ID``."""
        match = _FORM.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise CodebookError(
                f"{text!r} does not name a code: write SITE/GROUP/ID, e.g. {EXAMPLE} "
                "(group 0 at sites with one group)"
            )
        return cls(match["site"], int(match["group"]), int(match["id"]))

    def sort_key(self) -> tuple:
        """Natural order: by site (``layers.2`` before ``layers.10``), group, then id."""
        return (natural_key(self.site), self.group, self.id)

    def check(self, model: CodebookModel) -> CodeRef:
        """Refuse a code that ``model`` does not have; returns the code itself."""
        check_codes(model, self.site, self.group, [self.id])
        return self


def check_codes(model: CodebookModel, site: str, group: int | None, ids: Iterable[int]) -> None:
    """Refuse a site, group (``None``: every group) or code id that ``model`` does not have."""
    config = model.codebook(site).config
    if group is not None and group >= config.groups:
        raise CodebookError(
            f"group (head) {group} is out of range at {site}, which has {config.groups} "
            f"group(s) (0..{config.groups - 1})"
        )
    for id_ in ids:
        if id_ >= config.num_codes:
            raise CodebookError(
                f"code {id_} is out of range at {site}, which has {config.num_codes} codes "
                f"(0..{config.num_codes - 1})"
            )
