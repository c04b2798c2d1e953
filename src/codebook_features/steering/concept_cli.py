"""``codebook concept new|show|list``: build concepts from a store or texts, and read them."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator
from typing_extensions import Self

from codebook_features.errors import CodebookError
from codebook_features.persist.files import CONCEPTS_DIR
from codebook_features.settings.base import NonNegativeInt, PositiveInt, Settings, Text
from codebook_features.settings.options import (
    POSITIONAL,
    add_options,
    add_subcommand,
    settings_from_args,
)
from codebook_features.steering.config import SelectionRule


def _concept_name(name: str) -> str:
    from codebook_features.steering.concept import check_name

    return check_name(name)


class NewConcept(Settings):
    """Build a concept: codes chosen by a rule, saved as ``<concepts_dir>/<name>.json``."""

    model: Text
    """The saved codebook model the concept is for (a directory or a hub name)."""
    name: Annotated[str, AfterValidator(_concept_name)]
    """The concept's name (letters, digits, - _ .); also its file name."""
    store: str | None = None
    """The code store to choose codes from (with --pattern or --label_field/--label)."""
    pattern: str | None = None
    """A regex over the store's text: codes for the tokens it matches."""
    label_field: str | None = None
    """A label column of the store's documents (with --label)."""
    label: str | None = None
    """Codes for the documents with this label (see --label_by)."""
    label_by: Literal["texts", "tokens"] = "texts"
    """With --label: ``texts`` ranks codes by the log-odds of firing on the label's documents
    (at most --label_examples of them) rather than on twice as many others, among codes that
    fire on them at least --rule.min_support times: what steered the most topics on the
    language demo (README). ``tokens`` ranks codes as classifiers of the label's tokens by
    --rule.rank."""
    label_examples: PositiveInt = 60
    """With --label_by texts: at most this many of the label's documents, drawn by --seed."""
    seed: NonNegativeInt = 0
    """Seeds the draw of --label_by texts."""
    examples: str | None = None
    """A text file (one text per line) or .jsonl (strings or {"text": ...}) of examples of the
    concept, with --contrast: codes that fire more on them than on the contrast."""
    contrast: str | None = None
    """Texts without the concept (same formats as --examples)."""
    tokenizer: str | None = None
    """The tokenizer for --examples and --label_by texts (default: the model's own)."""
    rule: SelectionRule = Field(default_factory=SelectionRule)
    """Which of the ranked codes the concept keeps."""
    batch_size: PositiveInt = 8
    """Texts per forward pass (--examples, --label_by texts)."""
    mode: Literal["least", "all", "add"] = "all"
    """How steering forces the concept by default."""
    positions: Literal["all", "new"] = "new"
    """Which tokens steering forces by default (edit the file for absolute positions)."""
    description: str = ""
    """A note saved with the concept."""
    concepts_dir: str = CONCEPTS_DIR
    """The concepts directory the concept is saved in."""
    overwrite: bool = False
    """Replace a concept of that name."""

    @model_validator(mode="after")
    def _one_way(self) -> Self:
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
        by_label = {"label_by", "label_examples", "seed"} & self.model_fields_set
        if by_label and self.label is None:
            names = ", ".join(f"--{name}" for name in sorted(by_label))
            raise CodebookError(f"{names} only apply with --label: give --label, or leave them out")
        if self.label is not None and self.label_by == "tokens":
            drawn = {"label_examples", "seed"} & self.model_fields_set
            if drawn:
                names = ", ".join(f"--{name}" for name in sorted(drawn))
                raise CodebookError(
                    f"{names} only apply with --label_by texts (they draw its documents): "
                    "leave them out with --label_by tokens"
                )
        texts = self.examples is not None or (self.label is not None and self.label_by == "texts")
        if texts and self.rule.rank != SelectionRule().rank:  # nested settings are completed
            raise CodebookError(
                "--rule.rank ranks codes of tokens (--pattern, --label_by tokens); texts are "
                "ranked by log-odds: leave --rule.rank out"
            )
        return self


class ShowConcept(Settings):
    """Show a concept's codes with their scores."""

    concept: str = Field(json_schema_extra=POSITIONAL)
    """A concept file, or the name of one in ``concepts_dir``."""
    concepts_dir: str = CONCEPTS_DIR
    """The concepts directory in which a concept given by name is found."""
    model: str | None = None
    """Also check the concept against this saved model."""


class ListConcepts(Settings):
    """List the concepts of a directory."""

    concepts_dir: str = Field(CONCEPTS_DIR, json_schema_extra=POSITIONAL)
    """The concepts directory."""


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


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="concept_command", metavar="ACTION", required=True)
    for name, help_text, cls, run in (
        ("new", "build a concept from a regex, a label or example texts", NewConcept, _new),
        ("show", "a concept's codes with their scores", ShowConcept, _show),
        ("list", "the concepts of a directory", ListConcepts, _list),
    ):
        command = add_subcommand(sub, name, help_text)
        command.description = cls.__doc__
        add_options(command, cls)
        command.add_argument("--json", action="store_true", help="print JSON, not text")
        command.set_defaults(run=run)


def _new(args: argparse.Namespace) -> None:
    from codebook_features.attach.loading import load_codebook_model, load_tokenizer
    from codebook_features.steering import selection
    from codebook_features.steering.concept import check_concept_target, concept_file, save_concept

    config = settings_from_args(NewConcept, args)
    target = check_concept_target(concept_file(config.concepts_dir, config.name), config.overwrite)
    texts = (read_texts(config.examples), read_texts(config.contrast)) if config.examples else None
    model = load_codebook_model(config.model, what="concept new")
    store = _store(config, model) if config.store else None
    common = {"rule": config.rule, "description": config.description}
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
    elif config.label_by == "texts":
        concept = selection.concept_from_label_texts(
            store,
            model,
            load_tokenizer(config.tokenizer or config.model),
            config.name,
            config.label_field,
            config.label,
            examples=config.label_examples,
            seed=config.seed,
            batch_size=config.batch_size,
            **common,
        )
    else:
        concept = selection.concept_from_label(
            store, model, config.name, config.label_field, config.label, **common
        )
    concept = concept.replace(mode=config.mode, positions=config.positions)
    concept.check_codes(model)
    save_concept(concept, target, overwrite=config.overwrite)
    if args.json:
        print(json.dumps(concept.to_dict()))
        return
    print(f"saved concept {concept.name} ({len(concept.codes)} codes): {target}")
    _print_codes(concept)


def _store(config: NewConcept, model: Any) -> Any:
    """The store, refused when it was recorded with another model."""
    from codebook_features.store.model_loading import check_recorded_with
    from codebook_features.store.reader import CodeStore

    store = CodeStore(config.store)
    check_recorded_with(store, model, config.model)
    return store


def _show(args: argparse.Namespace) -> None:
    from codebook_features.steering.concept import find_concept, load_concept

    config = settings_from_args(ShowConcept, args)
    path = find_concept(config.concept, config.concepts_dir)
    model = None
    if config.model:
        from codebook_features.attach.loading import load_codebook_model

        model = load_codebook_model(config.model, what="concept show")
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
    from codebook_features.steering.concept import read_concepts

    config = settings_from_args(ListConcepts, args)
    concepts, problems = read_concepts(config.concepts_dir)
    if args.json:
        print(json.dumps({"concepts": [c.to_dict() for c in concepts], "problems": problems}))
    elif not concepts:
        print(f"no {'readable ' if problems else ''}concepts in {config.concepts_dir}")
    else:
        print(f"{'name':<24} {'codes':>5}  chosen by")
        for concept in concepts:
            print(f"{concept.name:<24} {len(concept.codes):>5}  {_how(concept.selection)}")
    if problems:  # the readable ones are listed first
        more = f" (and {len(problems) - 1} more damaged)" if len(problems) > 1 else ""
        raise CodebookError(problems[0] + more)


def _how(selection: dict[str, Any]) -> str:
    method = selection.get("method")
    if method == "regex":
        return f"regex {selection.get('pattern')!r}"
    if method == "label":
        return f"label {selection.get('label_field')} = {selection.get('label')!r}"
    if method == "texts":
        texts = f"{selection.get('examples')} example vs {selection.get('contrast')} contrast texts"
        if "label" in selection:  # drawn from a store's documents
            texts += f" (documents with {selection.get('label_field')} = {selection['label']!r})"
        return texts
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
