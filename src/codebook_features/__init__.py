"""Codebook features: sparse, discrete and steerable features for neural networks."""

from codebook_features._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codebook_features._version": ["__version__"],
        "codebook_features.attach.code_ref": ["CodeRef"],
        "codebook_features.attach.interventions": ["Ablate", "Force"],
        "codebook_features.attach.config": ["CodebookModelConfig"],
        "codebook_features.attach.model": ["CodebookModel"],
        "codebook_features.attach.observation": ["Observation"],
        "codebook_features.codebook": ["Codebook", "CodebookConfig", "CodebookOutput"],
        "codebook_features.errors": ["CodebookError"],
    },
)
