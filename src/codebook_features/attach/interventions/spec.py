"""Interventions as data: which codes to force or ablate, where, and how.

A spec is a small frozen value, checked on construction for what it says by itself and against a
model (:meth:`Force.check`) for what it asks of it. It turns into JSON and back without loss, so
concept files, steering evaluations and the HTTP API pass the same object that
``CodebookModel.intervene`` applies. Nothing here touches a model's hooks (see ``apply.py``).

JSON form (``"*"`` as a group means every group of the site)::

    {"kind": "force", "site": "layers.1.attn_heads", "codes": {"2": [17]},
     "mode": "least", "positions": "new"}
    {"kind": "force", "site": "layers.0.mlp", "rows": [{"0": [3]}, {"0": [5]}],
     "mode": "all", "positions": [7]}
    {"kind": "ablate", "site": "layers.0.mlp", "codes": {"*": [3]}, "mode": "next_best"}
"""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import InitVar, dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from codebook_features.attach.code_ref import CodeRef, check_codes
from codebook_features.errors import CodebookError

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel

FORCE_MODES = ("least", "all", "add")
ABLATE_MODES = ("remove", "next_best")
EVERY_GROUP = "*"
"""The group key that means every group of a site."""

GroupCodes = tuple[tuple[int | None, tuple[int, ...]], ...]
"""``(group, code ids)`` pairs in group order; group ``None`` stands for every group."""
Positions = Literal["all", "new"] | tuple[int, ...]
"""``all`` tokens, only ``new`` ones (after the prompt: the tokens of the first forward pass
after the intervention starts), or absolute positions (prompt and generated tokens counted
together, also during cached generation)."""
Codes = int | Sequence[int] | Mapping[Any, int | Sequence[int]]
"""A code id, a list of them (for every group, or for ``groups=``), or group -> id(s)."""


@dataclass(frozen=True)
class _Spec:
    """What force and ablate specs share: site, codes by group, mode and positions."""

    kind: ClassVar[str]
    modes: ClassVar[tuple[str, ...]]
    site: str
    codes: GroupCodes = ()
    mode: str = ""
    positions: Positions = "all"
    groups: InitVar[Sequence[int] | None] = None

    def __post_init__(self, groups: Sequence[int] | None) -> None:
        if not isinstance(self.site, str) or not self.site:
            raise CodebookError(f"{self.kind}: site must be a site name, got {self.site!r}")
        if self.mode not in self.modes:
            raise CodebookError(
                f"unknown {self.kind} mode {self.mode!r}: choose from {', '.join(self.modes)}"
            )
        object.__setattr__(self, "positions", check_positions(self.positions))
        if not (isinstance(self.codes, tuple) and not self.codes):  # () = not given
            object.__setattr__(self, "codes", group_codes(self.codes, groups, self.site))

    # ------------------------------------------------------------------ against a model
    def by_group(self, model: CodebookModel, codes: GroupCodes | None = None) -> dict[int, list]:
        """``codes`` (the spec's own by default) with every group spelled out for ``model``;
        refuses groups and ids the site does not have."""
        config = model.codebook(self.site).config
        table: dict[int, list[int]] = {}
        for group, ids in self.codes if codes is None else codes:
            check_codes(model, self.site, group, ids)
            for g in range(config.groups) if group is None else [group]:
                listed = table.setdefault(g, [])
                listed += [c for c in ids if c not in listed]
        return table

    def check(self, model: CodebookModel) -> None:
        """Refuse a spec that does not fit ``model`` (unknown site, group or code id)."""
        self.by_group(model)

    # ------------------------------------------------------------------ as data
    def refs(self) -> list[CodeRef]:
        """The codes named with explicit groups, as :class:`CodeRef` values."""
        return [CodeRef(self.site, g, c) for g, ids in self.codes if g is not None for c in ids]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "site": self.site}
        if self.codes:
            data["codes"] = _codes_to_dict(self.codes)
        data["mode"] = self.mode
        data["positions"] = (
            self.positions if isinstance(self.positions, str) else list(self.positions)
        )
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict())


@dataclass(frozen=True)
class Force(_Spec):
    """Force codes at a site.

    Modes: ``least`` puts the codes into the least similar slots (the first code into the last
    slot, the next into the one before, ...), ``all`` fills every slot with them (repeated as
    needed: one code means k copies), ``add`` appends them as extra slots. With ``rows``, row
    ``i`` of a batch gets the codes ``rows[i]`` instead (a batch of ``n * len(rows)`` rows gives
    each spec row to ``n`` consecutive batch rows, as ``repeat_interleave`` does); a row with no
    codes is left alone.
    """

    kind: ClassVar[str] = "force"
    modes: ClassVar[tuple[str, ...]] = FORCE_MODES
    mode: str = "least"
    rows: tuple[GroupCodes, ...] | None = None

    def __post_init__(self, groups: Sequence[int] | None) -> None:
        super().__post_init__(groups)
        if self.rows is not None:
            if self.codes:
                raise CodebookError("force: give codes (every row) or rows (per row), not both")
            if isinstance(self.rows, (str, Mapping)) or not isinstance(self.rows, Iterable):
                raise CodebookError("force: rows must be a list with the codes of each row")
            rows = tuple(group_codes(row, groups, self.site, allow_empty=True) for row in self.rows)
            if not rows:
                raise CodebookError("force: rows is empty; give the codes of at least one row")
            object.__setattr__(self, "rows", rows)
        elif not self.codes:
            raise CodebookError(f"force at {self.site}: no codes given")

    def check(self, model: CodebookModel) -> None:
        k = model.codebook(self.site).config.k
        for codes in self.rows if self.rows is not None else [self.codes]:
            table = self.by_group(model, codes)
            if self.mode != "add" and table and max(len(c) for c in table.values()) > k:
                raise CodebookError(
                    f"mode {self.mode!r} puts each code in its own slot, but {self.site} has "
                    f"only k={k} slots: force fewer codes, or use mode 'add'"
                )

    def refs(self) -> list[CodeRef]:
        if self.rows is None:
            return super().refs()
        found = {
            CodeRef(self.site, g, c)
            for row in self.rows
            for g, ids in row
            if g is not None
            for c in ids
        }
        return sorted(found, key=CodeRef.sort_key)

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.rows is not None:
            data["rows"] = [_codes_to_dict(row) for row in self.rows]
        return data


@dataclass(frozen=True)
class Ablate(_Spec):
    """Ablate codes at a site: ``remove`` empties their slots (their share of the output is
    gone), ``next_best`` keeps them out of the search so the next-best codes take their slots."""

    kind: ClassVar[str] = "ablate"
    modes: ClassVar[tuple[str, ...]] = ABLATE_MODES
    mode: str = "remove"

    def __post_init__(self, groups: Sequence[int] | None) -> None:
        super().__post_init__(groups)
        if not self.codes:
            raise CodebookError(f"ablate at {self.site}: no codes given")

    def check(self, model: CodebookModel) -> None:
        table = self.by_group(model)
        config = model.codebook(self.site).config
        if self.mode == "next_best" and max(len(c) for c in table.values()) > (
            config.num_codes - config.k
        ):
            raise CodebookError(
                f"ablating that many codes leaves fewer than k codes at {self.site}"
            )


Intervention = Force | Ablate
KINDS: dict[str, type[Force] | type[Ablate]] = {"force": Force, "ablate": Ablate}


# ---------------------------------------------------------------------- building specs
def force_refs(
    refs: Iterable[CodeRef | str], mode: str = "least", positions: Positions = "all"
) -> list[Force]:
    """One :class:`Force` per site for a set of codes (e.g. a concept's)."""
    by_site: dict[str, dict[int, list[int]]] = {}
    for ref in refs:
        ref = CodeRef.parse(ref) if isinstance(ref, str) else ref
        by_site.setdefault(ref.site, {}).setdefault(ref.group, []).append(ref.id)
    return [Force(site, codes, mode=mode, positions=positions) for site, codes in by_site.items()]


def group_codes(
    codes: Codes | GroupCodes,
    groups: Sequence[int] | None,
    site: str,
    allow_empty: bool = False,
) -> GroupCodes:
    """Normalise the ways of giving codes (see :data:`Codes`) to :data:`GroupCodes`."""
    if allow_empty and isinstance(codes, tuple) and not codes:
        return ()  # a row without codes, already normalised
    if isinstance(codes, Mapping):
        if groups is not None:
            raise CodebookError("give groups either in the codes mapping or as groups=, not both")
        pairs = [(_group(g, site), _ids(c, site)) for g, c in codes.items()]
    elif _is_group_codes(codes):
        pairs = [(None if g is None else _group(g, site), _ids(c, site)) for g, c in codes]
    else:
        ids = _ids(codes, site)
        chosen: list[int | None] = [None] if groups is None else [_group(g, site) for g in groups]
        if not chosen:
            raise CodebookError(f"no groups chosen at {site}")
        pairs = [(g, ids) for g in chosen]
    merged: dict[int | None, tuple[int, ...]] = {}
    for group, ids in pairs:
        merged[group] = tuple(dict.fromkeys(merged.get(group, ()) + ids))
    if not merged and not allow_empty:
        raise CodebookError(f"no codes given at {site}")
    for group, ids in merged.items():
        if not ids:
            raise CodebookError(f"no codes given for group {_label(group)} at {site}")
    return tuple(sorted(merged.items(), key=lambda item: -1 if item[0] is None else item[0]))


def _is_group_codes(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and bool(value)
        and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], tuple) for v in value)
    )


def _group(value: Any, site: str) -> int | None:
    if value is None or value == EVERY_GROUP:
        return None
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise CodebookError(
            f"a group (head) at {site} must be an integer >= 0 or {EVERY_GROUP!r}, got {value!r}"
        )
    return int(value)


def _ids(value: Any, site: str) -> tuple[int, ...]:
    if isinstance(value, str) or not (_is_int(value) or isinstance(value, Iterable)):
        raise CodebookError(
            f"codes at {site} must be an integer id or a list of them, got {value!r}"
            + (" (a string is not a list of codes)" if isinstance(value, str) else "")
        )
    items = [value] if _is_int(value) else list(value)
    for item in items:
        if not _is_int(item) or int(item) < 0:
            raise CodebookError(f"a code id at {site} must be an integer >= 0, got {item!r}")
    return tuple(int(i) for i in items)


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    # a one-element integer tensor or numpy scalar
    return hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and "int" in str(value.dtype)


def check_positions(positions: Any) -> Positions:
    if isinstance(positions, str) and positions in ("all", "new"):
        return positions  # type: ignore[return-value]
    if not isinstance(positions, str) and isinstance(positions, Iterable):
        listed = list(positions)  # a generator would be used up by the check below
        if all(_is_int(p) and int(p) >= 0 for p in listed):
            return tuple(int(p) for p in listed)
    raise CodebookError(
        f"positions must be 'all', 'new' or a list of absolute positions >= 0, got {positions!r}"
    )


def _label(group: int | None) -> str:
    return EVERY_GROUP if group is None else str(group)


def _codes_to_dict(codes: GroupCodes) -> dict[str, list[int]]:
    return {_label(g): list(ids) for g, ids in codes}


# ---------------------------------------------------------------------- JSON
def intervention_from_dict(data: Any) -> Intervention:
    """A spec from its :meth:`~Force.to_dict` form; unknown keys are refused."""
    if not isinstance(data, Mapping):
        raise CodebookError(f"an intervention must be a JSON object, got {data!r}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise CodebookError(
            f"an intervention needs a kind, one of {', '.join(KINDS)}; got {kind!r}"
        )
    cls = KINDS[kind]
    known = {f.name for f in dataclasses.fields(cls)} | {"kind"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise CodebookError(
            f"unknown key(s) {', '.join(unknown)} in a {kind} intervention; "
            f"known: {', '.join(sorted(known))}"
        )
    values = {k: v for k, v in data.items() if k != "kind"}
    if "codes" in values and not isinstance(values["codes"], Mapping):
        values["codes"] = {EVERY_GROUP: values["codes"]}
    return cls(**values)


def to_json(specs: Intervention | Iterable[Intervention], indent: int | None = None) -> str:
    """JSON of one spec (an object) or of several (a list)."""
    if isinstance(specs, (Force, Ablate)):
        return json.dumps(specs.to_dict(), indent=indent)
    return json.dumps([spec.to_dict() for spec in specs], indent=indent)


def from_json(text: str, model: CodebookModel | None = None) -> list[Intervention]:
    """The specs in ``text`` (an object or a list of them); with ``model``, each is checked
    against it, so a spec that does not fit is refused before anything runs."""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError) as error:
        raise CodebookError(f"interventions are not valid JSON: {error}") from error
    specs = [intervention_from_dict(item) for item in (data if isinstance(data, list) else [data])]
    if model is not None:
        for spec in specs:
            spec.check(model)
    return specs
