"""One fingerprint of a model's codebooks: what a code store and a concept record of the model
they were made with, so that either can be matched with a model, and with each other.

A code id means something only in the codebooks that chose it, so the fingerprint covers
exactly what decides the codes: per site (in natural order) its name, the settings that decide
which codes fire, and the bytes of its parameters (code vectors, and the input LayerNorm's
weights when there is one). It is computed from the model in memory, so it is the same for a
model, its saved and reloaded copy, and the same model from the hub.
"""

from __future__ import annotations

import hashlib
import json
from typing import TYPE_CHECKING

from codebook_features.attach.site_names import natural_key

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel

_DECIDING = ("dim", "groups", "num_codes", "k", "similarity", "aggregate", "normalize_input")
"""The settings of a codebook that decide which codes fire."""


def codebooks_fingerprint(cbm: CodebookModel) -> str:
    """sha256 over ``cbm``'s codebooks (see the module docstring)."""
    import torch

    digest = hashlib.sha256()
    for site in sorted(cbm.sites, key=natural_key):
        codebook = cbm.codebook(site)
        config = {name: getattr(codebook.config, name) for name in _DECIDING}
        digest.update(json.dumps({"site": site, **config}, sort_keys=True).encode())
        for name, param in sorted(codebook.named_parameters()):
            data = param.detach().to("cpu", torch.float32).contiguous()
            digest.update(name.encode())
            digest.update(data.numpy().tobytes())
    return digest.hexdigest()
