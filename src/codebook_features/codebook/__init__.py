"""The codebook bottleneck layer and its configuration."""

from codebook_features.codebook.config import CodebookConfig, CodebookSettings
from codebook_features.codebook.layer import Codebook, CodebookOutput, CodeHook

__all__ = ["CodeHook", "Codebook", "CodebookConfig", "CodebookOutput", "CodebookSettings"]
