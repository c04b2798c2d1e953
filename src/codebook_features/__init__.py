"""Codebook features: sparse, discrete and steerable features for neural networks."""

from codebook_features._version import __version__
from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.interventions import Ablate, Force
from codebook_features.attach.model import CodebookModel, CodebookModelConfig
from codebook_features.attach.observation import Observation
from codebook_features.codebook import Codebook, CodebookConfig, CodebookOutput
from codebook_features.errors import CodebookError

__all__ = [
    "Ablate",
    "CodeRef",
    "Codebook",
    "CodebookConfig",
    "CodebookError",
    "CodebookModel",
    "CodebookModelConfig",
    "CodebookOutput",
    "Force",
    "Observation",
    "__version__",
]
