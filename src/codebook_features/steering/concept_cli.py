"""``codebook concept new|show|list``: build concepts from a store or texts, and read them."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from codebook_features.cli import add_command, command
from codebook_features.errors import CodebookError

DEFAULT_DIR = "concepts"


@dataclass
class NewConcept:
    """Build a concept: codes chosen by a rule, saved as ``<out>/<name>.json``."""

    model: str = ""
    """The saved codebook model the concept is for (a directory or a hub name)."""
    name: str = ""
    """The concept's name (letters, digits, - _ .); also its file name."""
    store: str | None = None
    """The code store to choose codes from (with --pattern or --label_field/--label)."""
    pattern: str | None = None
    """A regex over the store's text: codes for the tokens it matches."""
    label_field: str | None = None
    """A label column of the store's documents (with --label)."""
    label: str | None = None
    """Codes for the tokens of the documents with this label."""
    examples: str | None = None
    """A text file (one text per line) or .jsonl (strings or {"text": ...}) of examples of the
    concept, with --contrast: codes that fire more on them than on the contrast."""
    contrast: str | None = None
    """Texts without the concept (same formats as --examples)."""
    tokenizer: str | None = None
    """The tokenizer for --examples (default: the model's own)."""
    sites: list[str] = field(default_factory=list)
    """Sites by name, kind or glob (default: every site)."""
    per_group: int = 1
    """At most this many codes per site and group (head)."""
    max_codes: int = 8
    """At most this many codes in all."""
    min_precision: float = 0.0
    """Leave out less precise codes."""
    min_support: int = 5
    """Leave out codes that fire on fewer tokens (of the examples, for texts)."""
    rank: Literal["precision", "f1", "recall"] = "precision"
    """How store concepts rank codes (text concepts: by log-odds)."""
    smoothing: float = 1.0
    """Alpha of the log-odds of text concepts."""
    batch_size: int = 8
    """Texts per forward pass (--examples)."""
    mode: Literal["least", "all", "add"] = "all"
    """How steering forces the concept by default."""
    positions: Literal["all", "new"] = "new"
    """Which tokens steering forces by default (edit the file for absolute positions)."""
    description: str = ""
    """A note saved with the concept."""
    out: str = DEFAULT_DIR
    """The concepts directory."""

    def __post_init__(self) -> None:
        if not self.model or not self.name:
            raise CodebookError("give --model and --name (see --help)")
        given = [
            m
            for m, on in (
                ("--pattern", self.pattern),
                ("--label_field/--label", self.label_field or self.label),
                ("--examples/--contrast", self.examples or self.contrast),
            )
            if on
        ]
        if len(given) != 1:
            raise CodebookError(
                "choose the codes one way: --pattern, --label_field with --label, or "
                f"--examples with --contrast (given: {', '.join(given) or 'none'})"
            )
        if (self.label_field is None) != (self.label is None):
            raise CodebookError("give --label_field and --label together")
        if (self.examples is None) != (self.contrast is None):
            raise CodebookError("give --examples and --contrast together")
        if self.examples is None and not self.store:
            raise CodebookError(f"{given[0]} chooses codes from a store: give --store DIR")
        if self.examples is not None and self.store:
            raise CodebookError("--examples reads no store: leave --store out")

    def rule(self) -> Any:
        from codebook_features.steering.selection import SelectionRule

        return SelectionRule(
            sites=tuple(self.sites) or None,
            per_group=self.per_group,
            max_codes=self.max_codes,
            min_precision=self.min_precision,
            min_support=self.min_support,
            rank=self.rank,
            smoothing=self.smoothing,
        )


def read_texts(path: str) -> list[str]:
    """The texts of a file: one per non-blank line, or per line of a ``.jsonl`` file (a JSON
    string, or an object with a ``text`` field)."""
    file = Path(path)
    if not file.is_file():
        raise CodebookError(f"no text file {file}: give a file with one text per line")
    texts = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if file.suffix == ".jsonl":
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise CodebookError(f"{file} line {number} is not JSON: {error}") from error
            item = item.get("text") if isinstance(item, dict) else item
            if not isinstance(item, str):
                raise CodebookError(f'{file} line {number}: expected a string or {{"text": ...}}')
            line = item
        texts.append(line)
    if not texts:
        raise CodebookError(f"{file} holds no text")
    return texts


@command("concept", "concepts: named sets of codes to steer with (new, show, list)")
def _concept_command(parser: argparse.ArgumentParser) -> None:
    from codebook_features.settings.configs import add_arguments

    sub = parser.add_subparsers(dest="concept_command", metavar="ACTION", required=True)
    new = add_command(sub, "new", "build a concept from a regex, a label or example texts")
    add_arguments(new, NewConcept)
    new.add_argument("--overwrite", action="store_true", help="replace a concept of that name")
    new.add_argument("--json", action="store_true", help="print the concept as JSON")
    new.set_defaults(run=_new)
    show = add_command(sub, "show", "a concept's codes with their scores")
    show.add_argument("concept", metavar="NAME_OR_FILE", help="a concept file, or a name in --dir")
    show.add_argument("--dir", default=DEFAULT_DIR, help="the concepts directory")
    show.add_argument("--model", help="also check the concept against this saved model")
    show.add_argument("--json", action="store_true", help="print the concept's JSON")
    show.set_defaults(run=_show)
    listing = add_command(sub, "list", "the concepts of a directory")
    listing.add_argument("dir", nargs="?", default=DEFAULT_DIR, metavar="DIR")
    listing.add_argument("--json", action="store_true", help="print JSON, not a table")
    listing.set_defaults(run=_list)


def _new(args: argparse.Namespace) -> None:
    import dataclasses

    from codebook_features.persist.loading import load_model, load_tokenizer
    from codebook_features.settings.configs import from_dict, overrides_from_args
    from codebook_features.steering import selection
    from codebook_features.steering.concept import check_concept_target, concept_file, save_concept

    config = from_dict(NewConcept, overrides_from_args(args, NewConcept))
    rule = config.rule()
    target = check_concept_target(concept_file(config.out, config.name), args.overwrite)
    texts = (read_texts(config.examples), read_texts(config.contrast)) if config.examples else None
    store = _store(config) if config.store else None
    model = load_model(config.model, what="concept new")
    common = {"rule": rule, "description": config.description}
    if texts is not None:
        concept = selection.concept_from_texts(
            model,
            load_tokenizer(config.tokenizer or config.model),
            config.name,
            *texts,
            batch_size=config.batch_size,
            **common,
        )
    elif config.pattern is not None:
        concept = selection.concept_from_regex(store, model, config.name, config.pattern, **common)
    else:
        concept = selection.concept_from_label(
            store, model, config.name, config.label_field, config.label, **common
        )
    concept = dataclasses.replace(concept, mode=config.mode, positions=config.positions)
    concept.check_codes(model)
    save_concept(concept, target, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(concept.to_dict()))
        return
    print(f"saved concept {concept.name} ({len(concept.codes)} codes): {target}")
    _print_codes(concept)


def _store(config: NewConcept) -> Any:
    """The store, refused when it was recorded with another model."""
    from codebook_features.store.model_loading import check_recorded_with
    from codebook_features.store.reader import CodeStore

    store = CodeStore(config.store)
    check_recorded_with(store, config.model)
    return store


def _show(args: argparse.Namespace) -> None:
    from codebook_features.steering.concept import find_concept, load_concept

    path = find_concept(args.concept, args.dir)
    model = None
    if args.model:
        from codebook_features.persist.loading import load_model

        model = load_model(args.model, what="concept show")
    concept = load_concept(path, model)
    if args.json:
        print(json.dumps(concept.to_dict()))
        return
    print(
        f"{concept.name}: {len(concept.codes)} codes, mode {concept.mode}, positions "
        f"{concept.positions} ({path})"
    )
    if concept.description:
        print(concept.description)
    print(f"chosen by: {_how(concept.selection)}")
    _print_codes(concept)


def _list(args: argparse.Namespace) -> None:
    from codebook_features.steering.concept import list_concepts

    concepts = list_concepts(args.dir)
    if args.json:
        print(json.dumps({"concepts": [c.to_dict() for c in concepts]}))
        return
    if not concepts:
        print(f"no concepts in {args.dir}")
        return
    print(f"{'name':<24} {'codes':>5}  chosen by")
    for concept in concepts:
        print(f"{concept.name:<24} {len(concept.codes):>5}  {_how(concept.selection)}")


def _how(selection: dict[str, Any]) -> str:
    method = selection.get("method")
    if method == "regex":
        return f"regex {selection.get('pattern')!r}"
    if method == "label":
        return f"label {selection.get('label_field')} = {selection.get('label')!r}"
    if method == "texts":
        return f"{selection.get('examples')} example vs {selection.get('contrast')} contrast texts"
    return str(method or "by hand")


def _print_codes(concept: Any) -> None:
    keys = list(dict.fromkeys(k for score in concept.scores for k in score))
    print(f"{'code':<32} " + " ".join(f"{k:>9}" for k in keys))
    for ref, score in zip(concept.codes, concept.scores, strict=True):
        cells = [_cell(score.get(k)) for k in keys]
        print(f"{ref!s:<32} " + " ".join(f"{c:>9}" for c in cells))


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)
