"""The model and tokenizer a recording runs, checked before any work starts.

The tokenizer must be a fast one, since only it gives each token's character offsets; the
model's fingerprint identifies it in the manifest and decides whether a recording continues.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from codebook_features.errors import CodebookError

if TYPE_CHECKING:
    import torch

    from codebook_features.attach.model import CodebookModel
    from codebook_features.store.config import RecordConfig

DEFAULT_MAX_LENGTH = 1024
"""Window length when neither ``max_length`` nor the model's context length says otherwise."""


@dataclass
class RecordingModel:
    """A loaded codebook model with its tokenizer and what the recording takes from them."""

    tokenizer: Any
    tokenizer_name: str
    """The tokenizer's source (hub name or directory), as the manifest names it."""
    device: torch.device
    cbm: CodebookModel
    sites: list[str]
    """Sites whose codes are recorded."""
    activation_sites: list[str]
    """Sites whose codebook inputs are also kept."""
    max_length: int
    """Tokens per forward window."""
    pad_id: int
    fingerprint: str
    """The codebooks' fingerprint (``attach.fingerprint``), as the manifest records it."""


def load_recording_model(config: RecordConfig, world: int) -> RecordingModel:
    """Load and check ``config``'s tokenizer and model; with several processes each takes the
    GPU of its local rank."""
    from codebook_features.attach.fingerprint import codebooks_fingerprint
    from codebook_features.attach.loading import check_fits, load_codebook_model, load_tokenizer
    from codebook_features.persist.sources import MODEL_FILES, check_source

    c = config
    check_source(c.model, "model", MODEL_FILES)
    source = c.tokenizer or c.model
    tokenizer = load_tokenizer(source)
    if not getattr(tokenizer, "is_fast", False):
        raise CodebookError(
            f"the tokenizer {source!r} is a slow (Python) tokenizer, which gives no "
            "character offsets: give a fast one (a directory with tokenizer.json)"
        )
    # Tokens are recorded without special tokens, so the post-processor has nothing to add; but
    # a ByteLevel one with trim_offsets (Pythia, RoBERTa) would cut the leading space off every
    # token's offsets. Without it, a token's offsets cover exactly its characters.
    tokenizer.backend_tokenizer.post_processor = None
    local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    cbm = load_codebook_model(c.model, c.device, what="record", local_rank=local)
    check_fits(tokenizer, cbm, source)
    device = next(cbm.parameters()).device
    sites = cbm.select_sites(c.sites)
    activation_sites = cbm.select_sites(c.activation_sites) if c.activation_sites else []
    for site in cbm.sites:
        cbm.codebook(site).track_stats = False  # statistics are not needed here
    context = context_length(cbm.model.config)
    if c.max_length is not None and context is not None and c.max_length > context:
        raise CodebookError(
            f"record: max_length {c.max_length} is longer than the model's context "
            f"({context} tokens)"
        )
    return RecordingModel(
        tokenizer=tokenizer,
        tokenizer_name=source,
        device=device,
        cbm=cbm,
        sites=sites,
        activation_sites=activation_sites,
        max_length=c.max_length or min(context or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH),
        pad_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0,
        fingerprint=codebooks_fingerprint(cbm),
    )


def context_length(config: Any) -> int | None:
    """The model's context length, under whichever name its config gives it."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_recorded_with(store: Any, cbm: CodebookModel, source: str) -> None:
    """Refuse a model (``cbm``, loaded from ``source``) other than the one ``store`` was
    recorded with: the manifest names it by its codebooks' fingerprint
    (:func:`~codebook_features.attach.fingerprint.codebooks_fingerprint`); a store of format 1
    by the sha256 of the saved model's codebook files."""
    from codebook_features.attach.fingerprint import codebooks_fingerprint

    recorded = store.manifest.model.fingerprint
    if not recorded:
        return
    if store.manifest.schema_version >= 2:
        found = codebooks_fingerprint(cbm)
    else:
        found = _files_sha256(source)
    if found != recorded:
        raise CodebookError(
            f"{source} is not the model {store.path} was recorded with: give that model, or "
            "record the store again with this one"
        )


def _files_sha256(model: str) -> str:
    """What stores of format 1 recorded: sha256 over the saved model's ``codebook_config.json``
    and then ``codebooks.safetensors``."""
    from codebook_features.persist.checksums import CHUNK
    from codebook_features.persist.files import CODEBOOK_CONFIG, CODEBOOK_WEIGHTS
    from codebook_features.persist.model_files import fetch

    digest = hashlib.sha256()
    for name in (CODEBOOK_CONFIG, CODEBOOK_WEIGHTS):
        with open(fetch(model, name, {}), "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()
