"""The settings of ``codebook serve``: what to serve, where, and the limits that keep one request
from holding the server."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass
from typing import Literal

from codebook_features.errors import CodebookError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    """What the code browser serves and how."""

    store: str = ""
    """The code store directory (written by ``codebook record``); opened read-only."""
    model: str | None = None
    """The saved codebook model the store was recorded with: adds similar codes, the logit
    effect, saving concepts and the steering playground."""
    run_dir: str | None = None
    """A training run directory whose metrics and plots the overview shows (default: the
    model's run, when the model sits in one)."""
    concepts_dir: str = "concepts"
    """Where concepts are listed, saved, edited and deleted (the only place the app writes)."""
    host: str = "127.0.0.1"
    """The address to listen on; anything but this machine exposes the app to the network."""
    port: int = 8000
    """The port to listen on."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to run the model (auto: a GPU when there is one)."""
    regex_time_limit: float = 2.0
    """Seconds a regex search may take before it is stopped and refused."""
    generation_time_limit: float = 30.0
    """Seconds a steering request may generate for (half unsteered, half steered)."""
    max_new_tokens: int = 200
    """The most tokens a steering request may ask for."""
    max_samples: int = 4
    """The most samples a steering request may ask for."""

    def __post_init__(self) -> None:
        if not self.store:
            raise CodebookError("give the store directory: codebook serve STORE")
        if not 0 < self.port < 65536:
            raise CodebookError(f"--port must be between 1 and 65535, got {self.port}")
        for name in ("regex_time_limit", "generation_time_limit"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise CodebookError(f"--{name} must be a positive number of seconds")
        if self.max_new_tokens < 1 or self.max_samples < 1:
            raise CodebookError("--max_new_tokens and --max_samples must be at least 1")

    @property
    def exposed(self) -> bool:
        """Whether ``host`` lets other machines connect."""
        if self.host in LOCAL_HOSTS:
            return False
        try:
            return not ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return True
