"""Concepts: named, saved, validated sets of codes that steering forces together.

A concept lists its codes best first, with the scores that ranked them and the rule that chose
them (``selection.py``), and it names the model it was made for by a fingerprint of that
model's codebooks: a code id means nothing in another model's codebooks, so a concept is
refused there rather than silently steering with unrelated codes. Concept files are readable
JSON meant to be edited by hand (drop a code, change the mode), so reading them is strict:
unknown keys and wrong types are refused with one line each; only keys written by a newer
version of this library are dropped with a warning, as for every other saved file
(``saved.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.interventions.spec import Force, Positions, force_refs
from codebook_features.attach.sites import natural_key
from codebook_features.errors import CodebookError
from codebook_features.persist.files import write_text
from codebook_features.settings.saved import VERSION_KEY, is_newer, read_saved, stamp

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel

KIND = "concept"
"""The value of a concept file's ``kind`` key: what marks a file as a concept of ours."""
SUFFIX = ".json"
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")
_FINGERPRINT_FIELDS = ("dim", "groups", "num_codes", "k", "similarity", "aggregate")


def model_fingerprint(cbm: CodebookModel) -> str:
    """sha256 over the codebooks in memory: per site in natural order, its name, the settings
    that decide which codes fire, and the bytes of its parameters (code vectors, and the input
    LayerNorm's weights when there is one). Equal for a model and its saved and reloaded copy;
    unlike the store's file fingerprint it needs no files."""
    digest = hashlib.sha256()
    for site in sorted(cbm.sites, key=natural_key):
        codebook = cbm.codebook(site)
        config = {name: getattr(codebook.config, name) for name in _FINGERPRINT_FIELDS}
        config["normalize_input"] = codebook.config.normalize_input
        digest.update(json.dumps({"site": site, **config}, sort_keys=True).encode())
        for name, param in sorted(codebook.named_parameters()):
            data = param.detach().to("cpu", torch.float32).contiguous()
            digest.update(name.encode())
            digest.update(data.numpy().tobytes())
    return digest.hexdigest()


def check_name(name: Any) -> str:
    """Refuse a concept name that is not also a plain file name."""
    if not isinstance(name, str) or not _NAME.match(name) or name in (".", ".."):
        raise CodebookError(
            f"a concept's name may hold only letters, digits, '-', '_' and '.', got {name!r}"
        )
    return name


def site_shapes(cbm: CodebookModel, sites: Any) -> dict[str, dict[str, int]]:
    """``{site: {groups, num_codes}}`` of ``sites`` in ``cbm``, as a concept records them."""
    return {
        site: {
            "groups": cbm.codebook(site).config.groups,
            "num_codes": cbm.codebook(site).config.num_codes,
        }
        for site in sorted(set(sites), key=natural_key)
    }


@dataclass(frozen=True)
class Concept:
    """A named set of codes of one model, ranked best first, and how to force it."""

    name: str
    """Letters, digits, ``-``, ``_`` and ``.``; also the file name (``<name>.json``)."""
    codes: tuple[CodeRef, ...]
    """Best first, without repeats (``SITE/GROUP/CODE`` strings are accepted)."""
    model: str
    """The fingerprint of the model's codebooks (:func:`model_fingerprint`)."""
    sites: dict[str, dict[str, int]]
    """``{site: {groups, num_codes}}`` of the codes' sites, to check codes without the model."""
    selection: dict[str, Any] = field(default_factory=dict)
    """How the codes were chosen: method, pattern or label, store, documents and rule."""
    scores: tuple[dict[str, Any], ...] = ()
    """Per code, in the order of ``codes``: what ranked it (empty: none recorded)."""
    mode: str = "all"
    """How steering forces it by default (a force mode: least, all, add)."""
    positions: Positions = "new"
    """Where steering forces it by default: all, new or a list of absolute positions."""
    description: str = ""

    def __post_init__(self) -> None:
        check_name(self.name)
        where = f"concept {self.name!r}"
        codes = self.codes
        if isinstance(codes, (str, CodeRef)) or not isinstance(codes, (list, tuple)):
            raise CodebookError(f"{where}: codes must be a list of SITE/GROUP/CODE strings")
        refs = tuple(c if isinstance(c, CodeRef) else _parse_ref(c, where) for c in codes)
        if not refs:
            raise CodebookError(f"{where} has no codes: a concept needs at least one")
        repeated = sorted({str(r) for r in refs if refs.count(r) > 1})
        if repeated:
            raise CodebookError(f"{where} lists {', '.join(repeated)} more than once")
        object.__setattr__(self, "codes", refs)
        if not isinstance(self.model, str) or not self.model:
            raise CodebookError(f"{where}: model must be the fingerprint of a model's codebooks")
        object.__setattr__(self, "sites", _check_sites(self.sites, refs, where))
        if not isinstance(self.selection, Mapping):
            raise CodebookError(f"{where}: selection must be a JSON object")
        object.__setattr__(self, "selection", dict(self.selection))
        scores = tuple(self.scores) if isinstance(self.scores, (list, tuple)) else None
        if scores is None or not all(isinstance(s, Mapping) for s in scores):
            raise CodebookError(f"{where}: scores must be a list of objects, one per code")
        if scores and len(scores) != len(refs):
            raise CodebookError(f"{where} has {len(scores)} scores for {len(refs)} codes")
        if any("code" in s for s in scores):
            raise CodebookError(f"{where}: a score may not be named 'code' (the code's own key)")
        object.__setattr__(self, "scores", tuple(dict(s) for s in scores) or ({},) * len(refs))
        # validates mode and positions as steering will use them
        probe = Force(
            refs[0].site, {refs[0].group: [refs[0].code]}, mode=self.mode, positions=self.positions
        )
        object.__setattr__(self, "positions", probe.positions)
        if not isinstance(self.description, str):
            raise CodebookError(f"{where}: description must be a string")

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
        found = model_fingerprint(model)
        if found != self.model:
            dtypes = sorted({str(p.dtype) for p in model.codebooks.parameters()})
            hint = f"; the codebooks' dtype counts too (this model's: {', '.join(dtypes)})" * (
                dtypes != ["torch.float32"]
            )
            raise CodebookError(
                f"concept {self.name!r} was made for another model (codebooks "
                f"{self.model[:12]}..., this model's are {found[:12]}...): build it again for "
                f"this model (`codebook concept new`), or pass the model it was made for{hint}"
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
        codes = [{"code": str(r), **s} for r, s in zip(self.codes, self.scores, strict=True)]
        positions = self.positions if isinstance(self.positions, str) else list(self.positions)
        return stamp(
            {
                "kind": KIND,
                "name": self.name,
                "description": self.description,
                "mode": self.mode,
                "positions": positions,
                "codes": codes,
                "model": self.model,
                "sites": self.sites,
                "selection": self.selection,
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
    def from_dict(cls, data: Any, source: str = "a concept") -> Concept:
        """A concept from its :meth:`to_dict` form (codes may be plain strings)."""
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise CodebookError(f'{source} is not a concept (a JSON object with "kind": "{KIND}")')
        if is_newer(data.get(VERSION_KEY)):  # a newer version's additions: dropped, warned
            data = read_saved(data, _SCHEMA, source)
        known = set(_SCHEMA)
        unknown = sorted(set(data) - known)
        if unknown:
            raise CodebookError(
                f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        missing = [k for k in ("name", "codes", "model", "sites") if k not in data]
        if missing:
            raise CodebookError(f"{source} lacks {', '.join(missing)}")
        entries = data["codes"]
        if not isinstance(entries, list):
            raise CodebookError(f"{source}: codes must be a list of SITE/GROUP/CODE strings")
        codes, scores = [], []
        for entry in entries:
            if isinstance(entry, dict):
                entry = dict(entry)
                codes.append(entry.pop("code", None))
                scores.append(entry)
            else:
                codes.append(entry)
                scores.append({})
        values = {k: v for k, v in data.items() if k not in ("kind", "codes", VERSION_KEY)}
        for key in ("name", "model", "mode", "description"):
            if key in values and not isinstance(values[key], str):
                raise CodebookError(f"{source}: {key} must be a string, got {values[key]!r}")
        try:
            return cls(codes=tuple(codes), scores=tuple(scores), **values)
        except CodebookError as error:
            if source == "a concept":
                raise
            raise CodebookError(f"{source}: {error}") from error

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


@dataclass
class _SiteShape:
    """What a concept file says of a site (for ``read_saved``)."""

    groups: int
    num_codes: int


_SCHEMA: dict[str, Any] = {
    **dict.fromkeys(("kind", "name", "description", "mode", "positions", "codes", "model")),
    "sites": dict[str, _SiteShape],
    "selection": None,
    VERSION_KEY: None,
}
"""The keys of a concept file (``read_saved``'s schema for files of newer versions)."""


def _parse_ref(value: Any, where: str) -> CodeRef:
    if not isinstance(value, str):
        raise CodebookError(f"{where}: a code must be a SITE/GROUP/CODE string, got {value!r}")
    return CodeRef.parse(value)


def _check_sites(sites: Any, refs: tuple[CodeRef, ...], where: str) -> dict[str, dict[str, int]]:
    if not isinstance(sites, Mapping):
        raise CodebookError(f"{where}: sites must map each site to its groups and num_codes")
    checked: dict[str, dict[str, int]] = {}
    for site, shape in sites.items():
        if not isinstance(shape, Mapping) or set(shape) != {"groups", "num_codes"}:
            raise CodebookError(
                f'{where}: sites[{site!r}] must be {{"groups": G, "num_codes": C}}, got {shape!r}'
            )
        for key, value in shape.items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise CodebookError(f"{where}: sites[{site!r}].{key} must be an integer >= 1")
        checked[str(site)] = {"groups": shape["groups"], "num_codes": shape["num_codes"]}
    for ref in refs:
        shape = checked.get(ref.site)
        if shape is None:
            raise CodebookError(
                f"{where}: {ref}'s site is not in sites; add {ref.site}'s groups and num_codes"
            )
        if ref.group >= shape["groups"] or ref.code >= shape["num_codes"]:
            raise CodebookError(
                f"{where}: {ref} is out of range; {ref.site} has {shape['groups']} group(s) of "
                f"{shape['num_codes']} codes"
            )
    return checked


# ---------------------------------------------------------------------- files
def is_concept_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a JSON file that says it is a concept (whatever its state)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("kind") == KIND


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
    return Path(directory) / f"{check_name(name)}{SUFFIX}"


def find_concept(
    name_or_file: str | os.PathLike, directory: str | os.PathLike = "concepts"
) -> Path:
    """A concept file given by path, or by name in ``directory``."""
    path = Path(name_or_file)
    if path.is_file():
        return path
    if _NAME.match(str(name_or_file)) and concept_file(directory, str(name_or_file)).is_file():
        return concept_file(directory, str(name_or_file))
    raise CodebookError(
        f"no concept {str(name_or_file)!r}: give a concept file, or the name of one in "
        f"{directory} (see `codebook concept list {directory}`)"
    )


def list_concepts(directory: str | os.PathLike) -> list[Concept]:
    """The concepts in a directory's ``*.json`` files, by name; other JSON files are skipped,
    a damaged concept file is refused with its path."""
    root = Path(directory)
    if not root.is_dir():
        raise CodebookError(f"{root} is not a directory of concepts")
    found = [load_concept(p) for p in sorted(root.glob(f"*{SUFFIX}")) if is_concept_file(p)]
    return sorted(found, key=lambda c: c.name)
