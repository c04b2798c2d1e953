"""What a steering request forces: a concept's codes and/or codes by name, as checked
:class:`~codebook_features.attach.interventions.Force` specs, and one line describing each.

``codebook steer`` and the browser's steering playground build their specs here, so a request
means the same on the command line and over HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from codebook_features.attach.interventions import Force
    from codebook_features.attach.model import CodebookModel
    from codebook_features.steering.concept import Concept


def force_specs(
    cbm: CodebookModel,
    *,
    concept: Concept | None = None,
    codes: Sequence[str] = (),
    top: int | None = None,
    mode: str | None = None,
    positions: Any = None,
) -> list[Force]:
    """The concept's first ``top`` codes (in its own mode and positions unless given), then
    ``codes`` (``SITE/GROUP/ID``; mode ``all`` and positions ``new`` unless given), all
    checked against ``cbm``."""
    from codebook_features.attach.code_ref import CodeRef
    from codebook_features.attach.interventions import force_refs

    specs = []
    if concept is not None:
        specs += concept.force_specs(top=top, mode=mode, positions=positions)
    if codes:
        refs = [CodeRef.parse(code).check(cbm) for code in codes]
        specs += force_refs(refs, mode=mode or "all", positions=positions or "new")
    for spec in specs:
        spec.check(cbm)
    return specs


def describe_intervention(data: dict[str, Any]) -> str:
    """One line naming a spec's codes (``SITE/GROUP/ID``), mode and positions."""
    if data.get("kind") in ("force", "ablate") and "codes" in data:
        codes = ", ".join(
            f"{data['site']}/{group}/{id_}" for group, ids in data["codes"].items() for id_ in ids
        )
        return f"{data['kind']} {codes} (mode {data['mode']}, positions {data['positions']})"
    rest = ", ".join(f"{k} {v}" for k, v in data.items() if k != "kind")
    return f"{data.get('kind', 'steering')} ({rest})"
