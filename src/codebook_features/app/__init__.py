"""The code browser: a web app over a code store (and its model), with a JSON API and pages."""

from codebook_features._lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "codebook_features.app.config": ["ServeConfig"],
        "codebook_features.app.server": ["create_app"],
    },
)
