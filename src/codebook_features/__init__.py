"""Codebook features: sparse, discrete and steerable features for neural networks."""

from codebook_features._version import __version__
from codebook_features.codebook import Codebook, CodebookConfig, CodebookOutput
from codebook_features.errors import CodebookError

__all__ = ["Codebook", "CodebookConfig", "CodebookError", "CodebookOutput", "__version__"]
