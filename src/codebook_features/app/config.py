"""The settings of ``codebook serve``: what to serve, where, and the limits that keep one request
from holding the server."""

from __future__ import annotations

import ipaddress

from pydantic import Field

from codebook_features.persist.files import CONCEPTS_DIR
from codebook_features.settings.base import Device, PositiveInt, PositiveNumber, Settings, Text
from codebook_features.settings.options import POSITIONAL

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ServeConfig(Settings):
    """What the code browser serves and how."""

    store: Text = Field(json_schema_extra=POSITIONAL)
    """The code store directory (written by ``codebook record``); opened read-only."""
    model: str | None = None
    """The saved codebook model the store was recorded with: adds similar codes, the logit
    effect, saving concepts and the steering playground."""
    run_dir: str | None = None
    """A training run directory whose metrics and plots the overview shows (default: the
    model's run, when the model sits in one)."""
    concepts_dir: str = CONCEPTS_DIR
    """Where concepts are listed, saved, edited and deleted (the only place the app writes)."""
    host: str = "127.0.0.1"
    """The address to listen on; anything but this machine exposes the app to the network."""
    port: int = Field(8000, ge=1, le=65535)
    """The port to listen on."""
    device: Device = "auto"
    """Where to run the model (auto: a GPU when there is one)."""
    regex_time_limit: PositiveNumber = 2.0
    """Seconds of wall-clock time a regex search may match for before it is refused."""
    generation_time_limit: PositiveNumber = 30.0
    """Seconds a steering request may generate for (half unsteered, half steered)."""
    max_new_tokens: PositiveInt = 200
    """The most tokens a steering request may ask for."""
    max_samples: PositiveInt = 4
    """The most samples a steering request may ask for."""

    @property
    def exposed(self) -> bool:
        """Whether ``host`` lets other machines connect."""
        if self.host in LOCAL_HOSTS:
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True
