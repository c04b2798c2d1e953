"""Interventions on codes: specs that say what to force or ablate (``spec``), and the context
managers that apply them to a model (``apply``)."""

from codebook_features._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codebook_features.attach.interventions.apply": [
            "AblateCodes",
            "ForceCodes",
            "Interventions",
            "applied",
        ],
        "codebook_features.attach.interventions.spec": [
            "ABLATE_MODES",
            "Ablate",
            "Codes",
            "FORCE_MODES",
            "Force",
            "Intervention",
            "Positions",
            "force_refs",
            "from_json",
            "intervention_from_dict",
            "to_json",
        ],
        "codebook_features.attach.observation": ["Observation"],
    },
)
