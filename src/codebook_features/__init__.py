"""Codebook features: sparse, discrete and steerable features for neural networks."""

from codebook_features._version import __version__
from codebook_features.codebook import Codebook, CodebookConfig, CodebookOutput
from codebook_features.errors import CodebookError
from codebook_features.model import CodebookModel, CodebookModelConfig

__all__ = [
    "Codebook",
    "CodebookConfig",
    "CodebookError",
    "CodebookModel",
    "CodebookModelConfig",
    "CodebookOutput",
    "__version__",
]
