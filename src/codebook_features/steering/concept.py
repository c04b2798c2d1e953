"""Concepts: named, saved, validated sets of codes that steering forces together.

A concept lists its codes best first, with the scores that ranked them and the rule that chose
them (``selection.py``), and it names the model it was made for by a fingerprint of that
model's codebooks: a code id means nothing in another model's codebooks, so a concept is
refused there rather than silently steering with unrelated codes. Concept files are readable
JSON meant to be edited by hand (drop a code, change the mode), so reading them is strict:
unknown keys and wrong types are refused with one line each; only keys written by a newer
version of this library are dropped with a warning, as for every other saved file
(:meth:`~codebook_features.settings.base.Settings.from_saved`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    model_validator,
)
from typing_extensions import Self

from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.fingerprint import codebooks_fingerprint
from codebook_features.attach.interventions.spec import Force, check_positions, force_refs
from codebook_features.attach.site_names import natural_key
from codebook_features.errors import CodebookError
from codebook_features.persist.files import CONCEPT_SUFFIX, CONCEPTS_DIR, write_text
from codebook_features.settings.base import (
    VERSION_KEY,
    PositiveInt,
    Record,
    Settings,
    Text,
    is_newer,
    stamp,
)

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel

KIND = "concept"
"""The value of a concept file's ``kind`` key: what marks a file as a concept of ours."""
_NAME = re.compile(r"[A-Za-z0-9._-]+")
"""A concept's name, matched in full (``$`` would also match before a final newline)."""


def check_name(name: Any) -> str:
    """Refuse a concept name that is not also a plain file name."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise CodebookError(
            f"a concept's name may hold only letters, digits, '-', '_' and '.', got {name!r}"
        )
    return name


class SiteShape(Settings):
    """What a concept records of a site, to check its codes without the model."""

    model_config = ConfigDict(frozen=True)

    groups: PositiveInt
    num_codes: PositiveInt


def site_shapes(cbm: CodebookModel, sites: Any) -> dict[str, SiteShape]:
    """``{site: {groups, num_codes}}`` of ``sites`` in ``cbm``, as a concept records them."""
    return {
        site: SiteShape(
            groups=cbm.codebook(site).config.groups,
            num_codes=cbm.codebook(site).config.num_codes,
        )
        for site in sorted(set(sites), key=natural_key)
    }


def _code(value: Any) -> CodeRef:
    if isinstance(value, CodeRef):
        return value
    if not isinstance(value, str):
        raise CodebookError(f"a code must be a SITE/GROUP/ID string, got {value!r}")
    return CodeRef.parse(value)


def _some_each_once(codes: tuple[CodeRef, ...]) -> tuple[CodeRef, ...]:
    if not codes:
        raise CodebookError("codes is empty: a concept needs at least one code")
    repeated = sorted({str(r) for r in codes if codes.count(r) > 1})
    if repeated:
        raise CodebookError(f"codes lists {', '.join(repeated)} more than once: keep one of each")
    return codes


def _not_named_code(score: dict[str, Any]) -> dict[str, Any]:
    if "code" in score:
        raise CodebookError("a score may not be named 'code' (the code's own key)")
    return score


Code = Annotated[CodeRef, PlainValidator(_code), PlainSerializer(str)]
"""A code, given as a :class:`CodeRef` or a ``SITE/GROUP/ID`` string."""
ForcePositions = Annotated[
    Literal["all", "new"] | tuple[int, ...],
    PlainValidator(check_positions),
    PlainSerializer(lambda p: p if isinstance(p, str) else list(p)),
]
"""``all``, ``new`` or a list of absolute positions (as a force spec takes them)."""


class Concept(Record):
    """A named set of codes of one model, ranked best first, and how to force it."""

    model_config = ConfigDict(frozen=True)

    name: Annotated[str, AfterValidator(check_name)]
    """Letters, digits, ``-``, ``_`` and ``.``; also the file name (``<name>.json``)."""
    codes: Annotated[tuple[Code, ...], AfterValidator(_some_each_once)]
    """Best first, without repeats (``SITE/GROUP/ID`` strings are accepted)."""
    fingerprint: Text
    """The fingerprint of the model's codebooks
    (:func:`~codebook_features.attach.fingerprint.codebooks_fingerprint`), as the code store
    recorded with that model names it too."""
    sites: dict[str, SiteShape]
    """``{site: {groups, num_codes}}`` of the codes' sites, to check codes without the model."""
    selection: dict[str, Any] = Field(default_factory=dict)
    """How the codes were chosen: method, pattern or label, store, documents and rule."""
    scores: tuple[Annotated[dict[str, Any], AfterValidator(_not_named_code)], ...] = ()
    """Per code, in the order of ``codes``: what ranked it (not given: none recorded)."""
    mode: Literal["least", "all", "add"] = "all"
    """How steering forces it by default (a force mode)."""
    positions: ForcePositions = "new"
    """Where steering forces it by default: all, new or a list of absolute positions."""
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _no_scores_recorded(cls, data: Any) -> Any:
        """No scores given: an empty score per code."""
        given = isinstance(data, Mapping) and isinstance(data.get("codes"), (list, tuple))
        if given and data.get("scores", ()) in ((), []):
            return {**data, "scores": [{}] * len(data["codes"])}
        return data

    @model_validator(mode="after")
    def _scores_and_sites_fit_the_codes(self) -> Self:
        where = f"concept {self.name!r}"
        if len(self.scores) != len(self.codes):
            raise CodebookError(
                f"{where} has {len(self.scores)} scores for {len(self.codes)} codes: give one "
                "per code, or none"
            )
        for ref in self.codes:
            shape = self.sites.get(ref.site)
            if shape is None:
                raise CodebookError(
                    f"{where}: {ref}'s site is not in sites; add {ref.site}'s groups and num_codes"
                )
            if ref.group >= shape.groups or ref.id >= shape.num_codes:
                raise CodebookError(
                    f"{where}: {ref} is out of range; {ref.site} has {shape.groups} group(s) "
                    f"of {shape.num_codes} codes"
                )
        return self

    # ------------------------------------------------------------------ steering
    def force_specs(
        self, *, top: int | None = None, mode: str | None = None, positions: Any = None
    ) -> list[Force]:
        """The first ``top`` codes (all by default; a larger ``top`` takes them all) as one
        :class:`Force` per site, in the concept's mode and positions unless given."""
        if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top < 1):
            raise CodebookError(f"top must be a whole number >= 1, got {top!r}")
        chosen = self.codes if top is None else self.codes[:top]
        return force_refs(
            chosen,
            mode=self.mode if mode is None else mode,
            positions=self.positions if positions is None else positions,
        )

    def check(self, model: CodebookModel) -> None:
        """Refuse a model the concept was not made for (see :meth:`check_codes` for the rest)."""
        found = codebooks_fingerprint(model)
        if found != self.fingerprint:
            dtypes = sorted({str(p.dtype) for p in model.codebooks.parameters()})
            hint = f"; the codebooks' dtype counts too (this model's: {', '.join(dtypes)})" * (
                dtypes != ["torch.float32"]
            )
            raise CodebookError(
                f"concept {self.name!r} was made for another model (codebooks "
                f"{self.fingerprint[:12]}..., this model's are {found[:12]}...): build it again "
                f"for this model (`codebook concept new`), or pass the model it was made for{hint}"
            )
        self.check_codes(model)

    def check_codes(self, model: CodebookModel) -> None:
        """Refuse codes ``model`` lacks, and a default force that does not fit it (modes
        ``least`` and ``all`` fit at most k codes in a group)."""
        for ref in self.codes:
            ref.check(model)
        for spec in self.force_specs():
            spec.check(model)

    # ------------------------------------------------------------------ as data
    def to_dict(self) -> dict[str, Any]:
        """The file's layout: ``kind`` first, each code with its scores, the version last."""
        data = self.model_dump(mode="json")
        codes = [{"code": c, **s} for c, s in zip(data["codes"], data["scores"], strict=True)]
        return stamp(
            {
                "kind": KIND,
                "name": data["name"],
                "description": data["description"],
                "mode": data["mode"],
                "positions": data["positions"],
                "codes": codes,
                "fingerprint": data["fingerprint"],
                "sites": data["sites"],
                "selection": data["selection"],
            }
        )

    def to_json(self) -> str:
        """Indented JSON, one code (with its scores) per line, for reading and editing."""
        data = self.to_dict()
        lines = []
        for key, value in data.items():
            if key == "codes":
                items = ",\n".join("    " + json.dumps(item, ensure_ascii=False) for item in value)
                text = "[\n" + items + "\n  ]"
            else:
                text = json.dumps(value, indent=2, ensure_ascii=False).replace("\n", "\n  ")
            lines.append(f"  {json.dumps(key)}: {text}")
        return "{\n" + ",\n".join(lines) + "\n}\n"

    @classmethod
    def from_dict(cls, data: Any, source: str = "a concept") -> Self:  # type: ignore[override]
        """A concept from its :meth:`to_dict` form (codes may be plain strings): strict, but
        for keys a newer version wrote, which are dropped with a warning."""
        if not isinstance(data, Mapping) or data.get("kind") != KIND:
            raise CodebookError(f'{source} is not a concept (a JSON object with "kind": "{KIND}")')
        if "scores" in data:
            raise CodebookError(
                f"{source}: unknown setting scores; a code's scores go with it in codes, as "
                '{"code": "SITE/GROUP/ID", "precision": ...}'
            )
        values = {k: v for k, v in data.items() if k != "kind"}
        if "model" in values and "fingerprint" not in values:  # the key's earlier name
            values["fingerprint"] = values.pop("model")
        entries = values.get("codes")
        if isinstance(entries, list):
            codes, scores = [], []
            for entry in entries:
                if isinstance(entry, Mapping):
                    entry = dict(entry)
                    codes.append(entry.pop("code", None))
                    scores.append(entry)
                else:
                    codes.append(entry)
                    scores.append({})
            values |= {"codes": codes, "scores": scores}
        if is_newer(values.get(VERSION_KEY)):  # a newer version's additions: dropped, warned
            return cls.from_saved(values, source)
        values.pop(VERSION_KEY, None)
        try:
            return super().from_dict(values)
        except CodebookError as error:
            if source == "a concept":
                raise
            raise CodebookError(f"{source}: {error}") from None

    @classmethod
    def from_json(
        cls, text: str, model: CodebookModel | None = None, *, source: str = "a concept"
    ) -> Concept:
        """The concept in ``text``; with ``model``, checked against it (:meth:`check`)."""
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, TypeError) as error:
            raise CodebookError(f"{source} is not valid JSON: {error}") from error
        concept = cls.from_dict(data, source)
        if model is not None:
            concept.check(model)
        return concept


# ---------------------------------------------------------------------- files
def is_concept_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a JSON file that says it is a concept (whatever its state: a file
    cut short still says so in its first line, and is reported as damaged, not skipped)."""
    try:
        text = Path(path).read_text()
    except (OSError, ValueError):
        return False
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:  # cut short, not followed by more (JSON lines)
        return not error.msg.startswith("Extra data") and _CLAIMS_CONCEPT.search(text) is not None
    except ValueError:
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


_CLAIMS_CONCEPT = re.compile(r'^\s*\{\s*"kind"\s*:\s*"' + re.escape(KIND) + '"')


def check_concept_target(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse to write a concept to ``path`` unless it is free, or a concept file that
    ``overwrite`` allows replacing; anything else there is never touched. Changes nothing."""
    target = Path(path)
    if target.is_dir():
        raise CodebookError(f"{target} is a directory: give the concept's file name")
    if target.parent.exists() and not target.parent.is_dir():
        raise CodebookError(f"{target.parent} is a file: give a directory for concepts")
    if target.exists() and not is_concept_file(target):
        raise CodebookError(
            f"{target} exists and is not a concept file: choose another name or directory "
            "(nothing was changed)"
        )
    if target.exists() and not overwrite:
        raise CodebookError(
            f"{target} already holds a concept: pass overwrite (--overwrite) to replace it, "
            "or choose another name"
        )
    return target


def save_concept(concept: Concept, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write ``concept`` to the file ``path`` atomically (see :func:`check_concept_target`)."""
    target = check_concept_target(path, overwrite)
    write_text(target, concept.to_json())
    return target


def load_concept(path: str | os.PathLike, model: CodebookModel | None = None) -> Concept:
    """The concept in the file ``path``; with ``model``, checked against it."""
    target = Path(path)
    if not target.is_file():
        raise CodebookError(
            f"no concept file {target}: check the path (list them with `codebook concept list DIR`)"
        )
    try:
        text = target.read_text()
    except UnicodeDecodeError as error:
        raise CodebookError(f"{target} is not a text file: give a concept's JSON file") from error
    return Concept.from_json(text, model, source=str(target))


def concept_file(directory: str | os.PathLike, name: str) -> Path:
    """Where the concept ``name`` lives in a concepts directory: ``<directory>/<name>.json``."""
    return Path(directory) / f"{check_name(name)}{CONCEPT_SUFFIX}"


def find_concept(
    name_or_file: str | os.PathLike, directory: str | os.PathLike = CONCEPTS_DIR
) -> Path:
    """A concept file given by path, or by name in ``directory``."""
    path = Path(name_or_file)
    if path.is_file():
        return path
    if _NAME.fullmatch(str(name_or_file)) and concept_file(directory, str(name_or_file)).is_file():
        return concept_file(directory, str(name_or_file))
    raise CodebookError(
        f"no concept {str(name_or_file)!r}: give a concept file, or the name of one in "
        f"{directory} (see `codebook concept list {directory}`)"
    )


def list_concepts(directory: str | os.PathLike) -> list[Concept]:
    """The concepts in a directory's ``*.json`` files, by name; other JSON files are skipped,
    a damaged concept file is refused with its path."""
    concepts, problems = read_concepts(directory)
    if problems:
        raise CodebookError(problems[0])
    return concepts


def read_concepts(directory: str | os.PathLike) -> tuple[list[Concept], list[str]]:
    """The concepts in a directory's ``*.json`` files, by name, and why each damaged concept
    file cannot be read (other JSON files are skipped)."""
    root = Path(directory)
    if not root.is_dir():
        raise CodebookError(f"{root} is not a directory of concepts")
    found, problems = [], []
    for path in sorted(root.glob(f"*{CONCEPT_SUFFIX}")):
        if is_concept_file(path):
            try:
                found.append(load_concept(path))
            except CodebookError as error:
                problems.append(str(error))
    return sorted(found, key=lambda c: c.name), problems
