"""The code browser: a web app over a code store (and its model), with a JSON API and pages."""

from codebook_features.app.config import ServeConfig
from codebook_features.app.server import create_app

__all__ = ["ServeConfig", "create_app"]
