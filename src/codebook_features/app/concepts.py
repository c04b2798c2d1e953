"""The browser's concepts: list, open, create, edit, add codes to, and delete the concept files
of one directory, by name only. Every write is an atomic replace of a file that already says it
is a concept (or of a new one), so nothing else in the directory is ever touched; changes are
made one at a time, so two saves at once cannot lose either."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from codebook_features.app import schemas as s
from codebook_features.app.errors import Conflict, NotFound, RequestError
from codebook_features.app.urls import concept_url
from codebook_features.attach.code_ref import CodeRef
from codebook_features.errors import CodebookError
from codebook_features.persist.files import CONCEPT_SUFFIX
from codebook_features.steering.concept import (
    Concept,
    check_name,
    concept_file,
    is_concept_file,
    load_concept,
    save_concept,
    site_shapes,
)

_OTHER_MODEL = "concept {name!r} was made for another model: it can be read here but not changed"


class ConceptFolder:
    """The concepts of ``directory``; ``model`` (with its ``fingerprint``) allows creating
    them and checks them."""

    def __init__(self, directory: Path, model: Any = None, fingerprint: str | None = None) -> None:
        self.directory = directory
        self.model = model
        self.fingerprint = fingerprint
        self._changing = threading.RLock()

    def _files(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return [p for p in sorted(self.directory.glob(f"*{CONCEPT_SUFFIX}")) if is_concept_file(p)]

    def usable_names(self) -> list[str]:
        """The concepts that can be steered with and added to here: those that can be read
        and, with a model, were made for it (others are only shown on the concepts page)."""
        names = []
        for path in self._files():
            try:
                concept = self._read(path)
            except CodebookError:
                continue
            if self.fingerprint is None or concept.fingerprint == self.fingerprint:
                names.append(concept.name)
        return names

    def list(self) -> s.ConceptsOut:
        found, problems = [], []
        for path in self._files():
            try:
                concept = self._read(path)
            except CodebookError as error:
                problems.append(str(error))
                continue
            found.append(
                s.ConceptSummary(
                    name=concept.name,
                    url=concept_url(concept.name),
                    description=concept.description,
                    codes=len(concept.codes),
                    first_codes=[str(c) for c in concept.codes[:5]],
                    method=concept.selection.get("method"),
                )
            )
        return s.ConceptsOut(concepts=found, writable=self.model is not None, problems=problems)

    def get(self, name: str) -> s.ConceptOut:
        return self._out(self._load(name))

    def create(self, request: s.ConceptIn) -> s.ConceptOut:
        with self._changing:
            return self._create(request)

    def _create(self, request: s.ConceptIn) -> s.ConceptOut:
        path = self._path(request.name)
        if path.exists():
            raise Conflict(
                f"a concept {request.name!r} exists: add codes to it, edit it, or choose "
                "another name"
            )
        concept = self._new(request.name, request.codes, request.description)
        concept = concept.replace(mode=request.mode, positions=request.positions)
        self._save(concept, overwrite=False)
        return self._out(concept)

    def add_codes(self, name: str, request: s.CodesIn) -> s.ConceptOut:
        """Add codes to the concept ``name`` (made when there is none), each once."""
        with self._changing:
            return self._add_codes(name, request)

    def _add_codes(self, name: str, request: s.CodesIn) -> s.ConceptOut:
        if not self._path(name).exists():
            new = self._new(name, request.codes, request.description, request.mode or "all")
            return self._out(self._save(new))
        concept = self._load(name)
        new = [c for c in _refs(request.codes) if c not in concept.codes]
        codes = [str(c) for c in (*concept.codes, *new)]
        return self._change(concept, s.ConceptEdit(codes=codes, mode=request.mode))

    def edit(self, name: str, request: s.ConceptEdit) -> s.ConceptOut:
        """Change the fields ``request`` gives; the others stay."""
        with self._changing:
            return self._edit(name, request)

    def _edit(self, name: str, request: s.ConceptEdit) -> s.ConceptOut:
        return self._change(self._load(name), request)

    def _change(self, concept: Concept, request: s.ConceptEdit) -> s.ConceptOut:
        changes: dict[str, Any] = request.model_dump(exclude_none=True)
        if "codes" in changes:
            codes = _refs(changes["codes"])
            scores = dict(zip(concept.codes, concept.scores, strict=True))
            changes["codes"] = codes
            changes["scores"] = tuple(scores.get(c, {}) for c in codes)
            sites = dict(concept.sites)
            if self.model is not None:
                for ref in codes:
                    ref.check(self.model)
                sites |= site_shapes(self.model, [c.site for c in codes])
            used = {c.site for c in codes}
            changes["sites"] = {site: shape for site, shape in sites.items() if site in used}
        edited = concept.replace(**changes)  # validated as a new one
        return self._out(self._save(edited, overwrite=True))

    def delete(self, name: str) -> s.Deleted:
        with self._changing:
            path = self._path(name)
            if not is_concept_file(path):
                raise NotFound(f"no concept {name!r} to delete")
            if self.fingerprint is not None:  # with the model: only its own concepts
                concept = self._read(path)
                if concept.fingerprint != self.fingerprint:
                    raise Conflict(_OTHER_MODEL.format(name=concept.name))
            path.unlink()
        return s.Deleted(deleted=name)

    # ------------------------------------------------------------------ helpers
    def _path(self, name: str) -> Path:
        try:
            return concept_file(self.directory, check_name(name))
        except CodebookError as error:
            raise RequestError(str(error)) from None

    def file(self, name: str) -> Path:
        """The file of the concept ``name``, refused (404) when there is none."""
        path = self._path(name)
        if not is_concept_file(path):
            raise NotFound(f"no concept {name!r}; the concepts page lists them")
        return path

    def _load(self, name: str) -> Concept:
        return self._read(self.file(name))

    def _read(self, path: Path) -> Concept:
        """The concept in ``path``, refused (409, naming the file, not where it lives) when it
        cannot be read or holds a concept of another name."""
        try:
            concept = load_concept(path)
        except CodebookError as error:
            reason = str(error).replace(str(path), path.name)
            raise Conflict(
                f"the concept file {path.name} cannot be used: {reason}; fix or delete the file "
                "by hand"
            ) from None
        if concept.name != path.stem:
            raise Conflict(
                f"{path.name} holds the concept {concept.name!r}: a concept's file is named "
                "after it, so rename the file or the concept"
            )
        return concept

    def _new(self, name: str, codes: list[str], description: str, mode: str = "all") -> Concept:
        if self.model is None or self.fingerprint is None:
            raise Conflict(
                "saving a new concept needs the model: start the browser with --model DIR"
            )
        refs = _refs(codes)
        for ref in refs:
            ref.check(self.model)
        return Concept(
            name=check_name(name),
            codes=refs,
            fingerprint=self.fingerprint,
            sites=site_shapes(self.model, [r.site for r in refs]),
            selection={"method": "browser"},
            description=description,
            mode=mode,
        )

    def _save(self, concept: Concept, overwrite: bool = False) -> Concept:
        if self.model is not None:
            if concept.fingerprint != self.fingerprint:
                raise Conflict(_OTHER_MODEL.format(name=concept.name))
            concept.check_codes(self.model)
        save_concept(concept, self._path(concept.name), overwrite=overwrite)
        return concept

    def _out(self, concept: Concept) -> s.ConceptOut:
        fits = None if self.fingerprint is None else concept.fingerprint == self.fingerprint
        return s.ConceptOut(
            name=concept.name,
            url=concept_url(concept.name),
            description=concept.description,
            codes=[str(c) for c in concept.codes],
            scores=list(concept.scores),
            mode=concept.mode,
            positions=concept.positions
            if isinstance(concept.positions, str)
            else list(concept.positions),
            selection=concept.selection,
            fingerprint=concept.fingerprint,
            fits_model=fits,
        )


def _refs(codes: list[str]) -> tuple[CodeRef, ...]:
    """The codes parsed, each once, in their first order."""
    return tuple(dict.fromkeys(CodeRef.parse(code) for code in codes))
