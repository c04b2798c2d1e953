"""``codebook search ...``: query a code store from the command line (a table, or ``--json``);
each query's settings are in :mod:`~codebook_features.search.config`."""

from __future__ import annotations

import argparse
import json
import math
from functools import partial
from typing import Any

from codebook_features.errors import CodebookError
from codebook_features.search.baselines_cli import run_baselines
from codebook_features.search.config import (
    BaselinesSearch,
    CodePageQuery,
    DescribeSearch,
    RegexSearch,
    TextQuery,
    TokenSearch,
    TopicSearch,
)
from codebook_features.settings.base import Settings
from codebook_features.settings.options import add_options, add_subcommand, settings_from_args

QUERIES: dict[str, tuple[type[Settings], str]] = {
    "regex": (RegexSearch, "codes ranked by precision and recall for a regex"),
    "token": (TokenSearch, "codes ranked by precision and recall for a token"),
    "topics": (TopicSearch, "codes that fire across whole documents"),
    "code": (CodePageQuery, "one code's page: tokens, contexts, co-occurring codes, logits"),
    "describe": (DescribeSearch, "codes by their automatic descriptions, e.g. the word 'ship'"),
    "text": (TextQuery, "the codes a model chooses on your own text, token by token"),
    "baselines": (BaselinesSearch, "codes vs neurons vs SAE latents on regex features"),
}
"""Query name -> its settings type and one-line help."""


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = "Query a code store (written by `codebook record`)."
    sub = parser.add_subparsers(dest="search_command", metavar="QUERY", required=True)
    for name, (cls, help_text) in QUERIES.items():
        query = add_subcommand(sub, name, help_text)
        query.description = " ".join((cls.__doc__ or "").split())
        add_options(query, cls)
        query.add_argument("--json", action="store_true", help="print JSON, not a table")
        query.set_defaults(run=run_baselines if cls is BaselinesSearch else partial(run, cls))


def run(cls: type[Settings], args: argparse.Namespace) -> None:
    """The query ``cls`` with the options given: a table, or JSON with ``--json``."""
    from codebook_features.search import regex_codes, token_codes
    from codebook_features.search.topics import find_topics
    from codebook_features.store.reader import CodeStore

    query, as_json = settings_from_args(cls, args), args.json
    if isinstance(query, TextQuery):
        _print_text(query, as_json)
        return
    store = CodeStore(query.store)
    if isinstance(query, CodePageQuery):
        _print_page(store, query, as_json)
        return
    if isinstance(query, DescribeSearch):
        _print_descriptions(store, query, as_json)
        return
    sites = query.sites or None
    if isinstance(query, TopicSearch):
        found = find_topics(
            store,
            sites,
            min_share=query.min_share,
            min_documents=query.min_documents,
            label_field=query.label_field,
            label=query.label,
            sort=query.sort,
            everywhere=query.everywhere,
            top=query.top,
        )
        if as_json:
            print(json.dumps(found.to_dict()))
            return
        _print_topics(store, found.codes)
        if found.everywhere:
            print(f"\ncovering more than {query.everywhere:.0%} of all documents (apart):")
            _print_topics(store, found.everywhere)
        return
    if isinstance(query, RegexSearch):
        ranked, count = regex_codes(store, query.pattern, sites, **query.options())
        what = f"match {query.pattern!r}"
    else:
        ranked, count = token_codes(store, query.token, sites, exact=query.exact, **query.options())
        what = f"are the token {query.token!r}"
    if as_json:
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


def _print_text(query: TextQuery, as_json: bool) -> None:
    """Each token of the text and, per site, its code ids (``group: id/id``), or JSON."""
    from codebook_features.attach.loading import load_model_and_tokenizer
    from codebook_features.search.text_codes import text_codes

    model, tokenizer = load_model_and_tokenizer(query.model)
    found = text_codes(model.eval(), tokenizer, query.text, query.sites or None)
    if as_json:
        print(json.dumps({"tokens": [t.to_dict() for t in found]}))
        return
    for token in found:
        print(f"{token.position:>4} {token.text!r}")
        for site, groups in token.codes.items():
            ids = "  ".join(f"{g}:" + "/".join(map(str, slots)) for g, slots in enumerate(groups))
            print(f"       {site:<24} {ids}")


def _print_page(store: Any, query: CodePageQuery, as_json: bool) -> None:
    from codebook_features.attach.code_ref import CodeRef
    from codebook_features.search.code_page import code_page

    ref = CodeRef.parse(query.code)
    model = tokenizer = None
    if query.model:
        from codebook_features.attach.loading import load_codebook_model, load_tokenizer
        from codebook_features.store.model_loading import check_recorded_with

        model = load_codebook_model(query.model, what="search code")
        check_recorded_with(store, model, query.model)
        try:
            tokenizer = load_tokenizer(query.model)
        except CodebookError:
            tokenizer = None  # names come from the store's own tokens then
    page = code_page(
        store, ref, model, tokenizer, top=query.top, examples=query.examples, offset=query.offset
    )
    if as_json:
        print(json.dumps(page.to_dict()))
        return
    print(
        f"{ref}: fires on {page.frequency:,} tokens ({page.share:.2%}) in {page.documents:,} "
        "documents"
    )
    described = page.description
    if described is not None and described.kind:
        score = (
            "held out: not scored, it never fires there"
            if math.isnan(described.f1)
            else f"held out: F1 {described.f1:.2f}, precision {_score(described.precision)}, "
            f"recall {_score(described.recall)}"
        )
        print(f"described as {described.text} ({score})")
    print("top tokens: " + ", ".join(f"{t.text!r} {t.share:.0%}" for t in page.top_tokens))
    if page.frequency:
        print(
            "positions: "
            + ", ".join(
                f"{_bin(b.start, b.stop)} {b.share:.0%} (all {b.base:.0%})" for b in page.positions
            )
        )
    if page.labels:
        print(
            "labels: "
            + ", ".join(f"{x.label} {x.share:.0%} (lift {x.lift:.2f})" for x in page.labels)
        )
    for example in page.examples:
        print(f"  doc {example.document}: {example.context}")
    if not page.examples and query.offset and page.frequency:
        print(f"(no contexts past the {page.frequency:,} there are)")
    if page.cooccurring:
        print("with: " + ", ".join(f"{c.code} {c.share:.0%}" for c in page.cooccurring))
    if page.similar:
        print("similar: " + ", ".join(f"{c.code} {c.cosine:.2f}" for c in page.similar))
    if page.logit_effect:
        print("raises: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in page.logit_effect.up))
        print("lowers: " + ", ".join(f"{t!r} {v:+.2f}" for t, v in page.logit_effect.down))
    for note in page.notes:
        print(f"({note})")


def _score(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.2f}"


def _bin(start: int, stop: int | None) -> str:
    """Positions ``start`` to ``stop`` (exclusive) as a reader writes them: 0, 1-3, 1024+."""
    if stop is None:
        return f"{start}+"
    return str(start) if stop == start + 1 else f"{start}-{stop - 1}"


def _print_topics(store: Any, found: list[Any]) -> None:
    print(f"{'code':<32} {'documents':>9} {'share':>6}  label (precision, recall, lift)")
    for t in found:
        tail = f"{t.label} ({t.precision:.2f}, {t.recall:.2f}, {t.lift:.2f})" if t.label else ""
        print(f"{t.code!s:<32} {t.documents:>9,} {t.mean_share:>6.2f}  {tail}")
        for document in t.examples[:2]:
            print(f"    doc {document}: {_snippet(store.texts[document])}")


def _print_descriptions(store: Any, query: DescribeSearch, as_json: bool) -> None:
    from codebook_features.search.describe import find_descriptions

    found = find_descriptions(
        store, query.query, min_f1=query.min_f1, top=query.top, sites=query.sites or None
    )
    if as_json:
        print(json.dumps({"codes": [d.to_dict() for d in found]}))
        return
    if not found:
        what = f"matches {query.query!r}" if query.query is not None else "is described"
        print(f"no code {what} with a held-out F1 of at least {query.min_f1}")
        return
    print(f"{'code':<32} {'f1':>5} {'prec':>5} {'recall':>6} {'support':>8}  description")
    for d in found:
        print(
            f"{d.code!s:<32} {d.f1:>5.2f} {d.precision:>5.2f} {d.recall:>6.2f} "
            f"{d.support:>8,}  {d.text}"
        )


def _snippet(text: str, width: int = 90) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."
