"""``codebook search ...``: query a code store from the command line (a table, or ``--json``)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from typing import Literal

from codebook_features.cli import add_command, command
from codebook_features.errors import CodebookError


@dataclass
class RegexSearch:
    """Which codes stand for the tokens a regular expression matches."""

    store: str = ""
    """The code store directory (written by ``codebook record``)."""
    pattern: str = ""
    """A Python regular expression; with a capture group, only the group's tokens count."""
    sites: list[str] = field(default_factory=list)
    """Sites by name, kind or glob, e.g. ``layers.*.mlp`` (default: every recorded site)."""
    sort: Literal["f1", "precision", "recall"] = "f1"
    """Rank codes by F1, precision or recall."""
    min_precision: float = 0.0
    """Leave out codes less precise than this."""
    min_recall: float = 0.0
    """Leave out codes with less recall than this."""
    min_support: int = 1
    """Leave out codes that fire on fewer tokens than this."""
    top: int = 20
    """How many codes to show."""
    examples: int = 3
    """Example tokens per code (from different documents)."""

    def __post_init__(self) -> None:
        if not self.store or not self.pattern:
            raise CodebookError("give --store DIR and --pattern REGEX (see --help)")
        for name in ("min_precision", "min_recall"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise CodebookError(f"--{name} must be between 0 and 1, got {value}")
        for name, least in (("min_support", 1), ("top", 1), ("examples", 0)):
            if getattr(self, name) < least:
                raise CodebookError(f"--{name} must be at least {least}")


@command("search", "search a code store: which codes stand for a pattern")
def _search_command(parser: argparse.ArgumentParser) -> None:
    from codebook_features.configs import add_arguments

    sub = parser.add_subparsers(dest="search_command", metavar="QUERY", required=True)
    regex = add_command(sub, "regex", "codes ranked by precision and recall for a regex")
    add_arguments(regex, RegexSearch)
    regex.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def run(args: argparse.Namespace) -> None:
        from codebook_features.configs import from_dict, overrides_from_args
        from codebook_features.search.regex import regex_codes
        from codebook_features.store.reader import CodeStore

        query = from_dict(RegexSearch, overrides_from_args(args, RegexSearch))
        store = CodeStore(query.store)
        ranked, positives = regex_codes(
            store,
            query.pattern,
            query.sites or None,
            sort=query.sort,
            min_precision=query.min_precision,
            min_recall=query.min_recall,
            min_support=query.min_support,
            top=query.top,
            examples=query.examples,
        )
        if args.json:
            print(json.dumps({"tokens": positives, "codes": [s.to_dict() for s in ranked]}))
            return
        print(f"{positives:,} tokens match {query.pattern!r}")
        if ranked:
            print(f"{'code':<32} {'precision':>9} {'recall':>7} {'support':>8}  example")
        for score in ranked:
            example = score.examples[0].context.replace("\n", " ") if score.examples else ""
            print(
                f"{score.code!s:<32} {score.precision:>9.3f} {score.recall:>7.3f} "
                f"{score.support:>8,}  {example}"
            )

    regex.set_defaults(run=run)
