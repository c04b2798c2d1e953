"""Loading a saved codebook model with its tokenizer, checked, on the device asked for.

Recording, steering, the steering evaluation and the browser all start this way; the checks
(does the source exist, does the tokenizer fit the model's vocabulary, is there a GPU) give one
clear line each instead of a traceback from deep inside transformers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from codebook_features.errors import CodebookError

if TYPE_CHECKING:
    import torch

    from codebook_features.attach.model import CodebookModel


def choose_device(device: str, what: str, *, local_rank: int = 0) -> torch.device:
    """``auto`` (a GPU when there is one), ``cpu`` or ``cuda``; ``cuda`` without a GPU is
    refused. ``local_rank`` picks the GPU of a data-parallel process."""
    import torch

    if device not in ("auto", "cpu", "cuda"):
        raise CodebookError(f"{what}: device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise CodebookError(f"{what}: device is cuda, but torch sees no GPU")
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        return torch.device(f"cuda:{local_rank}")
    return torch.device("cpu")


def load_tokenizer(source: str) -> Any:
    """The tokenizer of a model directory or hub name (or a tokenizer of its own)."""
    from transformers import AutoTokenizer

    from codebook_features.persist.sources import TOKENIZER_FILES, check_source

    check_source(source, "tokenizer", TOKENIZER_FILES)
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CodebookError(f"could not load the tokenizer {source!r}: {first}") from error


def load_codebook_model(
    model: str, device: str = "auto", *, what: str = "load", local_rank: int = 0
) -> CodebookModel:
    """The saved codebook model ``model`` (a directory or a hub name) in eval mode."""
    from codebook_features.attach.model import CodebookModel
    from codebook_features.persist.sources import MODEL_FILES, check_source

    check_source(model, "model", MODEL_FILES)
    target = choose_device(device, what, local_rank=local_rank)
    return CodebookModel.from_pretrained(model).to(target).eval()


def load_model_and_tokenizer(
    model: str,
    device: str = "auto",
    *,
    tokenizer: str | None = None,
    what: str = "load",
    local_rank: int | None = None,
) -> tuple[CodebookModel, Any]:
    """The saved codebook model ``model`` in eval mode on ``device``, and its tokenizer
    (``tokenizer``, default the model's own), checked to fit each other."""
    from codebook_features.persist.sources import MODEL_FILES, check_source

    check_source(model, "model", MODEL_FILES)
    loaded = load_tokenizer(tokenizer or model)
    rank = int(os.environ.get("LOCAL_RANK", "0")) if local_rank is None else local_rank
    cbm = load_codebook_model(model, device, what=what, local_rank=rank)
    check_fits(loaded, cbm, tokenizer or model)
    return cbm, loaded


def check_fits(tokenizer: Any, cbm: CodebookModel, source: str) -> None:
    """Refuse a tokenizer with more tokens than the model's vocabulary."""
    vocab = cbm.model.get_input_embeddings().num_embeddings
    if len(tokenizer) > vocab:
        raise CodebookError(
            f"the tokenizer {source!r} has {len(tokenizer)} tokens, but the model's vocabulary "
            f"has {vocab}: use the tokenizer the model was trained with"
        )
