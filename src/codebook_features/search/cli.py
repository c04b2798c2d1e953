"""``codebook search ...``: query a code store from the command line (a table, or ``--json``)."""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from codebook_features.cli import add_command, command
from codebook_features.errors import CodebookError
from codebook_features.search.baselines_cli import BaselinesSearch, run_baselines


@dataclass
class Ranking:
    """How codes are ranked and filtered (shared by the queries that score codes)."""

    store: str = ""
    """The code store directory (written by ``codebook record``)."""
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
        if not self.store:
            raise CodebookError("give --store DIR (see --help)")
        for name in ("min_precision", "min_recall"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0 <= value <= 1):
                raise CodebookError(f"--{name} must be between 0 and 1, got {value}")
        for name, least in (("min_support", 1), ("top", 1), ("examples", 0)):
            if getattr(self, name) < least:
                raise CodebookError(f"--{name} must be at least {least}")

    def options(self) -> dict:
        return {
            "sort": self.sort,
            "min_precision": self.min_precision,
            "min_recall": self.min_recall,
            "min_support": self.min_support,
            "top": self.top,
            "examples": self.examples,
        }


@dataclass
class RegexSearch(Ranking):
    """Which codes stand for the tokens a regular expression matches."""

    pattern: str = ""
    """A Python regular expression; with a capture group, only the group's tokens count."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.pattern:
            raise CodebookError("give --pattern REGEX (see --help)")


@dataclass
class TokenSearch(Ranking):
    """Which codes fire on a token."""

    token: str = ""
    """The token's text (matched with surrounding spaces stripped, unless ``exact``)."""
    exact: bool = False
    """Match the token's text exactly, spaces included."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.token.strip():
            raise CodebookError("give --token TEXT (see --help)")


@dataclass
class TopicSearch:
    """Codes that fire across a large share of whole documents."""

    store: str = ""
    """The code store directory (written by ``codebook record``)."""
    sites: list[str] = field(default_factory=list)
    """Sites by name, kind or glob (default: every recorded site)."""
    min_share: float = 0.5
    """A code covers a document when it fires on at least this share of its tokens."""
    min_documents: int = 2
    """Leave out codes covering fewer documents."""
    label_field: str | None = None
    """A label column of the documents: report each code's best label (precision, recall)."""
    label: str | None = None
    """Rank by how well codes single out this label (needs ``label_field``)."""
    top: int = 20
    """How many codes to show."""

    def __post_init__(self) -> None:
        if not self.store:
            raise CodebookError("give --store DIR (see --help)")
        if not (math.isfinite(self.min_share) and 0 < self.min_share <= 1):
            raise CodebookError(f"--min_share must be in (0, 1], got {self.min_share}")
        if self.min_documents < 1 or self.top < 1:
            raise CodebookError("--min_documents and --top must be at least 1")


@dataclass
class CodePageQuery:
    """Everything about one code."""

    store: str = ""
    """The code store directory (written by ``codebook record``)."""
    code: str = ""
    """The code, as ``SITE/GROUP/CODE`` (e.g. ``layers.3.attn_heads/2/417``)."""
    model: str | None = None
    """The saved codebook model (adds similar codes and the direct logit effect)."""
    top: int = 10
    """How many tokens, codes and logits to list."""
    examples: int = 8
    """How many contexts to show (one per document first)."""

    def __post_init__(self) -> None:
        if not self.store or not self.code:
            raise CodebookError("give --store DIR and --code SITE/GROUP/CODE (see --help)")
        if self.top < 1 or self.examples < 0:
            raise CodebookError("--top must be at least 1 and --examples at least 0")


@command("search", "search a code store: codes for a pattern, a token, or topics")
def _search_command(parser: argparse.ArgumentParser) -> None:
    from codebook_features.settings.configs import add_arguments

    sub = parser.add_subparsers(dest="search_command", metavar="QUERY", required=True)
    queries = {
        "regex": (RegexSearch, "codes ranked by precision and recall for a regex"),
        "token": (TokenSearch, "codes ranked by precision and recall for a token"),
        "topics": (TopicSearch, "codes that fire across whole documents"),
        "code": (CodePageQuery, "one code's page: tokens, contexts, co-occurring codes, logits"),
        "baselines": (BaselinesSearch, "codes vs neurons vs SAE latents on regex features"),
    }
    for name, (cls, help_text) in queries.items():
        query_parser = add_command(sub, name, help_text)
        add_arguments(query_parser, cls)
        query_parser.add_argument("--json", action="store_true", help="print JSON, not a table")
        if cls is BaselinesSearch:
            query_parser.set_defaults(run=run_baselines)
        else:
            query_parser.set_defaults(run=lambda args, cls=cls: _run(cls, args))


def _run(cls: type, args: argparse.Namespace) -> None:
    from codebook_features.search import regex_codes, token_codes, topic_codes
    from codebook_features.settings.configs import from_dict, overrides_from_args
    from codebook_features.store.reader import CodeStore

    query = from_dict(cls, overrides_from_args(args, cls))
    store = CodeStore(query.store)
    if isinstance(query, CodePageQuery):
        _print_page(store, query, args.json)
        return
    sites = query.sites or None
    if isinstance(query, TopicSearch):
        found = topic_codes(
            store,
            sites,
            min_share=query.min_share,
            min_documents=query.min_documents,
            label_field=query.label_field,
            label=query.label,
            top=query.top,
        )
        if args.json:
            print(json.dumps({"codes": [t.to_dict() for t in found]}))
            return
        print(f"{'code':<32} {'documents':>9} {'share':>6}  label (precision, recall)")
        for t in found:
            tail = f"{t.label} ({t.precision:.2f}, {t.recall:.2f})" if t.label else ""
            print(f"{t.code!s:<32} {t.documents:>9,} {t.mean_share:>6.2f}  {tail}")
            for document in t.examples[:2]:
                print(f"    doc {document}: {_snippet(store.texts[document])}")
        return
    if isinstance(query, RegexSearch):
        ranked, count = regex_codes(store, query.pattern, sites, **query.options())
        what = f"match {query.pattern!r}"
    else:
        ranked, count = token_codes(store, query.token, sites, exact=query.exact, **query.options())
        what = f"are the token {query.token!r}"
    if args.json:
        print(json.dumps({"tokens": count, "codes": [s.to_dict() for s in ranked]}))
        return
    print(f"{count:,} tokens {what}")
    if ranked:
        print(f"{'code':<32} {'precision':>9} {'recall':>7} {'support':>8}  example")
    for score in ranked:
        example = score.examples[0].context.replace("\n", " ") if score.examples else ""
        print(
            f"{score.code!s:<32} {score.precision:>9.3f} {score.recall:>7.3f} "
            f"{score.support:>8,}  {example}"
        )


def _print_page(store: Any, query: CodePageQuery, as_json: bool) -> None:
    from codebook_features.attach.code_ref import CodeRef
    from codebook_features.search.code_page import code_page

    ref = CodeRef.parse(query.code)
    model = tokenizer = None
    if query.model:
        from codebook_features.persist.loading import load_model, load_tokenizer
        from codebook_features.store.model_loading import check_recorded_with

        check_recorded_with(store, query.model)
        model = load_model(query.model, what="search code")
        try:
            tokenizer = load_tokenizer(query.model)
        except CodebookError:
            tokenizer = None  # names come from the store's own tokens then
    page = code_page(store, ref, model, tokenizer, top=query.top, examples=query.examples)
    if as_json:
        print(json.dumps(page.to_dict()))
        return
    print(
        f"{ref}: fires on {page.frequency:,} tokens ({page.share:.2%}) in {page.documents:,} "
        "documents"
    )
    print("top tokens: " + ", ".join(f"{t.text!r} {t.share:.0%}" for t in page.top_tokens))
    for example in page.examples:
        print(f"  doc {example.document}: {example.context}")
    if page.cooccurring:
        print("with: " + ", ".join(f"{c.code} {c.share:.0%}" for c in page.cooccurring))
    if page.similar:
        print("similar: " + ", ".join(f"{c.code} {c.share:.2f}" for c in page.similar))
    if page.logit_effect:
        print("raises: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in page.logit_effect.up))
        print("lowers: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in page.logit_effect.down))
    for note in page.notes:
        print(f"({note})")


def _snippet(text: str, width: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."
