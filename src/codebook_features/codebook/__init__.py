"""The codebook bottleneck layer and its configuration."""

from codebook_features._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codebook_features.codebook.config": ["CodebookConfig", "CodebookSettings"],
        "codebook_features.codebook.layer": ["CodeHook", "Codebook", "CodebookOutput"],
    },
)
