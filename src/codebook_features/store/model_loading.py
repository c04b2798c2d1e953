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

    from codebook_features.model import CodebookModel
    from codebook_features.store.record import RecordConfig

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
    """sha256 of the saved codebooks (see :func:`fingerprint`)."""


def load_model(config: RecordConfig, world: int) -> RecordingModel:
    """Load and check ``config``'s tokenizer and model; with several processes each takes the
    GPU of its local rank."""
    import torch
    from transformers import AutoTokenizer

    from codebook_features.model import CodebookModel
    from codebook_features.sources import MODEL_FILES, TOKENIZER_FILES, check_source

    c = config
    check_source(c.model, "model", MODEL_FILES)
    source = c.tokenizer or c.model
    check_source(source, "tokenizer", TOKENIZER_FILES)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise CodebookError(f"could not load the tokenizer {source!r}: {error}") from error
    if not getattr(tokenizer, "is_fast", False):
        raise CodebookError(
            f"the tokenizer {source!r} is a slow (Python) tokenizer, which gives no "
            "character offsets: give a fast one (a directory with tokenizer.json)"
        )
    # Tokens are recorded without special tokens, so the post-processor has nothing to add; but
    # a ByteLevel one with trim_offsets (Pythia, RoBERTa) would cut the leading space off every
    # token's offsets. Without it, a token's offsets cover exactly its characters.
    tokenizer.backend_tokenizer.post_processor = None
    if c.device == "cuda" and not torch.cuda.is_available():
        raise CodebookError("record: device is cuda, but torch sees no GPU")
    use_cuda = c.device == "cuda" or (c.device == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", "0")) if world > 1 else 0
    device = torch.device(f"cuda:{local}" if use_cuda else "cpu")
    cbm = CodebookModel.from_pretrained(c.model)
    cbm.to(device).eval()
    sites = cbm.select_sites(c.sites)
    activation_sites = cbm.select_sites(c.activation_sites) if c.activation_sites else []
    for site in cbm.sites:
        cbm.codebook(site).track_stats = False  # statistics are not needed here
    vocab = cbm.model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise CodebookError(
            f"the tokenizer {source!r} has {len(tokenizer)} tokens, but the model's "
            f"vocabulary has {vocab}: use the tokenizer the model was trained with"
        )
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
        fingerprint=fingerprint(c.model),
    )


def context_length(config: Any) -> int | None:
    """The model's context length, under whichever name its config gives it."""
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def fingerprint(model: str) -> str:
    """sha256 over the model's ``codebook_config.json`` and then ``codebooks.safetensors``."""
    from codebook_features.checksums import CHUNK
    from codebook_features.files import CODEBOOK_CONFIG, CODEBOOK_WEIGHTS
    from codebook_features.model_files import fetch

    digest = hashlib.sha256()
    for name in (CODEBOOK_CONFIG, CODEBOOK_WEIGHTS):
        with open(fetch(model, name, {}), "rb") as f:
            while block := f.read(CHUNK):
                digest.update(block)
    return digest.hexdigest()
