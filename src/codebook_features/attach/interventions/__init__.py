"""Interventions on codes: specs that say what to force or ablate (``spec``), and the context
managers that apply them to a model (``apply``)."""

from codebook_features.attach.interventions.apply import (
    AblateCodes,
    ForceCodes,
    Interventions,
    applied,
)
from codebook_features.attach.interventions.spec import (
    ABLATE_MODES,
    FORCE_MODES,
    Ablate,
    Codes,
    Force,
    Intervention,
    Positions,
    force_refs,
    from_json,
    intervention_from_dict,
    to_json,
)
from codebook_features.attach.observation import Observation

CodeCapture = Observation
"""Old name of :class:`~codebook_features.attach.observation.Observation` (what ``capture`` returns;
``capture[site]`` works as before, while ``calls`` is now a method taking the part and site)."""

__all__ = [
    "ABLATE_MODES",
    "FORCE_MODES",
    "Ablate",
    "AblateCodes",
    "CodeCapture",
    "Codes",
    "Force",
    "ForceCodes",
    "Intervention",
    "Interventions",
    "Positions",
    "applied",
    "force_refs",
    "from_json",
    "intervention_from_dict",
    "to_json",
]
