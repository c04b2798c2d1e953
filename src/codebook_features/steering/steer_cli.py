"""``codebook steer``: continue a prompt without and with forced codes, sample by sample."""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import textwrap
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import AfterValidator, Field, model_validator
from typing_extensions import Self

from codebook_features.errors import CodebookError
from codebook_features.persist.files import CONCEPTS_DIR
from codebook_features.settings.base import Device, PositiveInt, Settings, Text
from codebook_features.settings.options import add_options, settings_from_args
from codebook_features.steering.config import GenerationSettings

if TYPE_CHECKING:
    from codebook_features.steering.generate import SteeringResult

TWO_COLUMNS = 60
"""Terminals at least this wide show unsteered and steered side by side."""


def _codes(codes: list[str]) -> list[str]:
    from codebook_features.attach.code_ref import CodeRef

    for code in codes:
        CodeRef.parse(code)
    return codes


def _text(prompt: str) -> str:
    if not prompt.strip():
        raise CodebookError("the prompt is blank: give the text to continue")
    return prompt


class SteerConfig(Settings):
    """What to steer, with which codes, and how to generate."""

    model: Text
    """The saved codebook model: a directory (with its tokenizer) or a hub name."""
    prompt: Annotated[str, AfterValidator(_text)]
    """The text to continue."""
    codes: Annotated[list[str], AfterValidator(_codes)] = Field(default_factory=list)
    """Codes to force, as ``SITE/GROUP/ID`` (e.g. ``layers.1.mlp/0/17``); several allowed."""
    concept: str | None = None
    """The concept whose codes to force: a concept file (JSON, written by ``codebook
    concept``), or the name of one in ``concepts_dir``."""
    concepts_dir: str = CONCEPTS_DIR
    """The concepts directory in which a ``--concept`` given by name is found."""
    mode: Literal["least", "all", "add"] | None = None
    """How codes are forced: into the least similar slot, into every slot, or as extra slots
    (default: the concept's own mode, else all)."""
    positions: Literal["new", "all"] | None = None
    """Force at the generated tokens only (new) or at the prompt too (all) (default: the
    concept's own positions, else new)."""
    top: PositiveInt | None = None
    """Force only the concept's first N codes."""
    generation: GenerationSettings = Field(default_factory=GenerationSettings)
    """How to generate (the unsteered and steered continuation of a sample share its seed)."""
    device: Device = "auto"
    """Where to run the model (auto: a GPU when there is one)."""

    @model_validator(mode="after")
    def _something_to_steer_with(self) -> Self:
        if not self.codes and not self.concept:
            raise CodebookError(
                "nothing to steer with: give --codes SITE/GROUP/ID ... or --concept NAME_OR_FILE"
            )
        if self.top is not None and not self.concept:
            raise CodebookError("--top chooses among a concept's codes: give --concept too")
        return self


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Generate continuations of a prompt twice, without and with codes forced (given with "
        "--codes and/or a concept, by file or by name in --concepts_dir), each sample from the "
        "same seed both times, and show them side by side."
    )
    add_options(parser, SteerConfig)
    parser.add_argument("--json", action="store_true", help="print JSON, not text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    from codebook_features.steering.generate import steer

    config = settings_from_args(SteerConfig, args)
    from codebook_features.steering.forcing import force_specs

    cbm, tokenizer = load(config.model, config.device)
    concept = None
    if config.concept:
        from codebook_features.steering.concept import find_concept, load_concept

        concept = load_concept(find_concept(config.concept, config.concepts_dir), cbm)
    specs = force_specs(
        cbm,
        concept=concept,
        codes=config.codes,
        top=config.top,
        mode=config.mode,
        positions=config.positions,
    )
    result = steer(cbm, tokenizer, config.prompt, specs, config.generation)
    if args.json:
        print(json.dumps({"model": config.model, **result.to_dict()}))
        return
    print(format_result(result, shutil.get_terminal_size().columns))


def load(model: str, device: str) -> tuple[Any, Any]:
    """The codebook model (in eval mode, on ``device``) and its tokenizer, checked first."""
    from codebook_features.attach.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(model, device, what="steer")


# ---------------------------------------------------------------------- text output
def format_result(result: SteeringResult, width: int) -> str:
    """The prompt, what steers, then each sample's two continuations: side by side when
    ``width`` allows, else one after the other."""
    heads = [f"prompt: {result.prompt}"]
    from codebook_features.steering.forcing import describe_intervention

    heads += [f"steering: {describe_intervention(d)}" for d in result.interventions]
    lines = [line for head in heads for line in textwrap.wrap(head, width, subsequent_indent="  ")]
    columns = width >= TWO_COLUMNS
    half = (width - 3) // 2
    for i, (seed, plain, steered) in enumerate(
        zip(result.seeds, result.unsteered, result.steered, strict=True)
    ):
        lines += ["", f"sample {i + 1} (seed {seed})"]
        if columns:
            left = ["unsteered", *_wrap(plain, half)]
            right = ["steered", *_wrap(steered, half)]
            for a, b in itertools.zip_longest(left, right, fillvalue=""):
                lines.append(f"{a:<{half}} | {b}".rstrip())
        else:
            for label, text in (("unsteered", plain), ("steered", steered)):
                lines.append(f"{label}:")
                lines += ["  " + line for line in _wrap(text, max(width - 2, 20))]
    return "\n".join(lines)


def _wrap(text: str, width: int) -> list[str]:
    if not text.strip():
        return ["(nothing)"]
    return [line for part in text.splitlines() for line in textwrap.wrap(part, width) or [""]]
