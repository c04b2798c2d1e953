"""``codebook steer``: continue a prompt without and with forced codes, sample by sample."""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import textwrap
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from codebook_features.cli import command
from codebook_features.errors import CodebookError

if TYPE_CHECKING:
    from codebook_features.steering.generate import GenerationSettings, SteeringResult

TWO_COLUMNS = 60
"""Terminals at least this wide show unsteered and steered side by side."""


@dataclass
class SteerConfig:
    """What to steer, with which codes, and how to generate."""

    model: str = ""
    """The saved codebook model: a directory (with its tokenizer) or a hub name."""
    prompt: str = ""
    """The text to continue."""
    codes: list[str] = field(default_factory=list)
    """Codes to force, as ``SITE/GROUP/CODE`` (e.g. ``layers.1.mlp/0/17``); several allowed."""
    concept: str | None = None
    """The concept whose codes to force: a concept file (JSON, written by ``codebook
    concept``), or the name of one in ``concepts_dir``."""
    concepts_dir: str = "concepts"
    """The concepts directory in which a ``--concept`` given by name is found."""
    mode: Literal["least", "all", "add"] | None = None
    """How codes are forced: into the least similar slot, into every slot, or as extra slots
    (default: the concept's own mode, else all)."""
    positions: Literal["new", "all"] | None = None
    """Force at the generated tokens only (new) or at the prompt too (all) (default: the
    concept's own positions, else new)."""
    top: int | None = None
    """Force only the concept's first N codes."""
    max_new_tokens: int = 60
    """Tokens to generate after the prompt."""
    temperature: float = 1.0
    """Sampling temperature; 0 means greedy decoding."""
    top_k: int = 0
    """Sample among the k most likely tokens only (0: no limit)."""
    top_p: float = 1.0
    """Sample among the most likely tokens that together have this probability."""
    samples: int = 1
    """Continuations to show (the unsteered and steered one of a sample share its seed)."""
    seed: int = 0
    """Seed of the samples; the same seed gives the same texts."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run the model (auto: a GPU when there is one)."""

    def __post_init__(self) -> None:
        from codebook_features.attach.code_ref import CodeRef

        if not self.model:
            raise CodebookError("give --model DIR (a saved codebook model; see --help)")
        if not self.prompt.strip():
            raise CodebookError("give --prompt TEXT, the text to continue")
        if not self.codes and not self.concept:
            raise CodebookError(
                "give --codes SITE/GROUP/CODE ... or --concept NAME_OR_FILE to steer with"
            )
        for code in self.codes:
            CodeRef.parse(code)
        if self.top is not None:
            if not self.concept:
                raise CodebookError("--top chooses among a concept's codes: give --concept too")
            if self.top < 1:
                raise CodebookError(f"--top must be at least 1, got {self.top}")
        self.settings()  # validates the generation settings before the model is loaded

    def settings(self) -> GenerationSettings:
        from codebook_features.steering.generate import GenerationSettings

        return GenerationSettings.of(self)


@command("steer", "continue a prompt without and with forced codes, side by side")
def _steer_command(parser: argparse.ArgumentParser) -> None:
    from codebook_features.settings.configs import add_arguments

    parser.description = (
        "Generate continuations of a prompt twice, without and with codes forced (given with "
        "--codes and/or a concept, by file or by name in --concepts_dir), each sample from the "
        "same seed both times, and show them side by side."
    )
    add_arguments(parser, SteerConfig)
    parser.add_argument("--json", action="store_true", help="print JSON, not text")
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> None:
    from codebook_features.settings.configs import from_dict, overrides_from_args
    from codebook_features.steering.generate import steer

    config = from_dict(SteerConfig, overrides_from_args(args, SteerConfig))
    cbm, tokenizer = load(config.model, config.device)
    specs = force_specs(config, cbm)
    result = steer(cbm, tokenizer, config.prompt, specs, config.settings())
    if args.json:
        print(json.dumps({"model": config.model, **result.to_dict()}))
        return
    print(format_result(result, shutil.get_terminal_size().columns))


def load(model: str, device: str) -> tuple[Any, Any]:
    """The codebook model (in eval mode, on ``device``) and its tokenizer, checked first."""
    from codebook_features.persist.loading import load_model_and_tokenizer

    return load_model_and_tokenizer(model, device, what="steer")


def force_specs(config: SteerConfig, cbm: Any) -> list[Any]:
    """The Force specs of the concept (first) and of ``--codes``, checked against ``cbm``."""
    from codebook_features.attach.code_ref import CodeRef
    from codebook_features.attach.interventions import force_refs

    specs = []
    if config.concept:
        from codebook_features.steering.concept import find_concept, load_concept

        concept = load_concept(find_concept(config.concept, config.concepts_dir), cbm)
        specs += concept.force_specs(top=config.top, mode=config.mode, positions=config.positions)
    if config.codes:
        refs = [CodeRef.parse(code).check(cbm) for code in config.codes]
        specs += force_refs(refs, mode=config.mode or "all", positions=config.positions or "new")
    for spec in specs:
        spec.check(cbm)
    return specs


# ---------------------------------------------------------------------- text output
def format_result(result: SteeringResult, width: int) -> str:
    """The prompt, what steers, then each sample's two continuations: side by side when
    ``width`` allows, else one after the other."""
    heads = [f"prompt: {result.prompt}"]
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


def describe_intervention(data: dict[str, Any]) -> str:
    """One line naming a spec's codes (``SITE/GROUP/CODE``), mode and positions."""
    if data.get("kind") in ("force", "ablate") and "codes" in data:
        codes = ", ".join(
            f"{data['site']}/{group}/{code}" for group, ids in data["codes"].items() for code in ids
        )
        return f"{data['kind']} {codes} (mode {data['mode']}, positions {data['positions']})"
    rest = ", ".join(f"{k} {v}" for k, v in data.items() if k != "kind")
    return f"{data.get('kind', 'steering')} ({rest})"


def _wrap(text: str, width: int) -> list[str]:
    if not text.strip():
        return ["(nothing)"]
    return [line for part in text.splitlines() for line in textwrap.wrap(part, width) or [""]]
