"""Running the stages of a resumable demo (the TokFSM experiment, the language demo).

A demo is a sequence of stages (make data, train, evaluate, analyse, ...) whose results go
into one ``results.json`` in its output directory (:class:`DemoResults`), and compares a base
model with finetuned :class:`Variant` models. The file is rewritten after every stage, so a
killed demo continues where it stopped: the caller skips a stage whose result is already in the
results (each demo knows what "done" means for its stages), :class:`Stages` announces and times
the others and saves the results after each. :func:`train_or_reuse` is the training stage:
it resumes an unfinished run, reuses a finished one with the same settings and refuses one with
other settings.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import Field, model_validator
from typing_extensions import Self

from codebook_features.attach.config import CodebookModelConfig
from codebook_features.errors import CodebookError
from codebook_features.persist.files import CHECKPOINT_DIR, FINAL_DIR, write_json
from codebook_features.persist.ownership import RUN, check_output_dir
from codebook_features.persist.rundir import RunDir
from codebook_features.settings.base import (
    NonNegativeInt,
    PositiveInt,
    PositiveNumber,
    Record,
    Settings,
    Text,
    stamp,
)

if TYPE_CHECKING:
    from codebook_features.training import RunConfig

logger = logging.getLogger(__name__)


class Variant(Settings):
    """A model of a demo's comparison, finetuned from the demo's base model: with codebooks at
    ``sites``, or a plain finetune when there are none."""

    name: Text
    """The model's name in the demo's tables (its run directory is made from it)."""
    sites: list[str] = Field(default_factory=list)
    """Codebook sites (none: a plain finetune)."""
    k: PositiveInt = 1
    """Codes per token and group."""
    num_codes: PositiveInt = 512
    """Codes per group."""
    groups: PositiveInt = 1
    """Groups of the codebooks at sites other than attn_heads (one per head there)."""
    steps: PositiveInt | None = None
    """Optimizer steps (default: the demo's steps for a variant)."""
    lr: PositiveNumber | None = None
    """Learning rate (default: the demo's for a variant)."""

    @model_validator(mode="after")
    def _plain_finetunes_alike(self) -> Self:
        """A plain finetune has no codebook settings: whatever a file gives for them, they read
        as the defaults, so two descriptions of the same finetune are equal."""
        if not self.sites:
            for name in ("k", "num_codes", "groups"):
                setattr(self, name, type(self).model_fields[name].default)
        return self

    def codebooks(self) -> CodebookModelConfig | None:
        """The codebooks to attach (``None`` for a plain finetune)."""
        if not self.sites:
            return None
        return CodebookModelConfig(
            sites=list(self.sites), num_codes=self.num_codes, k=self.k, groups=self.groups
        )


P = TypeVar("P", bound=Settings)


class DemoResults(Record, Generic[P]):
    """What a demo measured, rewritten into ``results.json`` after every stage; each demo adds
    its own stages' results."""

    preset: str
    """The preset's name (``custom`` for a preset given directly)."""
    seed: NonNegativeInt
    """The demo's seed."""
    settings: P
    """The preset itself: the sizes of every stage."""
    seconds: dict[str, float] = Field(default_factory=dict)
    """Wall seconds per stage (summed over the sessions that ran it)."""

    def to_dict(self) -> dict[str, Any]:
        return stamp(self.model_dump(mode="json", exclude_none=True))

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read ``results.json`` (a newer version's file loads with a warning)."""
        try:
            return cls.from_saved(json.loads(path.read_text()), str(path))
        except (ValueError, KeyError, TypeError, AttributeError) as error:  # CodebookError too
            raise CodebookError(
                f"{path} is damaged ({error}); delete it to run every stage again"
            ) from error


R = TypeVar("R", bound=DemoResults[Any])


def resume_results(path: Path, load: Callable[[Path], R], same: Callable[[R], bool]) -> R | None:
    """The results an earlier session of the demo left in ``path`` (``None`` when there are
    none); results made with other settings are refused, since continuing them would mix two
    experiments in one report."""
    if not path.exists():
        return None
    results = load(path)
    if not same(results):
        raise CodebookError(
            f"{path.parent} holds a pipeline with other settings or another seed; "
            "choose another --output_dir"
        )
    return results


class Stages(Generic[R]):
    """Announces and times the stages of a demo, and rewrites its results file after each.

    Use one :meth:`stage` block per stage; whether a stage is still to do is the caller's
    check (``if results.analysis is None: with stages.stage("analysis"): ...``).
    """

    def __init__(self, path: Path, results: R, say: Callable[[str], None] = logger.info) -> None:
        self.path = path
        """The results file (``results.json``)."""
        self.results = results
        self.say = say
        """Receives a line per stage (and whatever the demo reports through it)."""

    @contextmanager
    def stage(self, name: str, title: str | None = None) -> Iterator[None]:
        """Run the block as the stage ``name``: announce it (as ``title``, default ``name``);
        when the block ends without an error, add its wall time to ``results.seconds[name]``
        and save the results. A block that raises saves nothing."""
        self.say(f"[{title or name}]")
        start = time.perf_counter()
        yield
        seconds = self.results.seconds
        seconds[name] = round(seconds.get(name, 0) + time.perf_counter() - start, 1)
        self.save()

    def save(self) -> None:
        """Write the results file atomically."""
        write_json(self.path, self.results.to_dict())


def train_or_reuse(config: RunConfig, out: Path) -> Path:
    """Train ``config`` into the run directory ``out`` and return its final model directory.

    An unfinished run in ``out`` is resumed from its checkpoint (one that stopped before its
    first checkpoint starts again); a finished run with the same settings is reused as it is;
    a finished run with other settings is refused. ``config``'s ``output_dir``, ``resume`` and
    ``overwrite`` are decided here.
    """
    from codebook_features.training import train
    from codebook_features.training.checkpoint import changed_settings

    out = Path(out)
    state = check_output_dir(out, RUN)  # refuses a directory that is not a run of ours
    resume = state == "ours" and (out / CHECKPOINT_DIR).exists()
    training = config.training.replace(
        output_dir=str(out),
        resume=resume,
        overwrite=state == "ours" and not resume,  # it stopped before a checkpoint
    )
    config = config.replace(training=training)
    if state == "ours" and RunDir(out).finished():
        changes = changed_settings(RunDir(out).config(), config)
        if changes:
            raise CodebookError(
                f"{out} holds a finished run with other settings ({'; '.join(changes[:3])}); "
                "choose another --output_dir"
            )
        return out / FINAL_DIR
    result = train(config)
    if result.model_dir is None:
        raise CodebookError(f"training in {out} stopped early; run the pipeline again")
    return result.model_dir
