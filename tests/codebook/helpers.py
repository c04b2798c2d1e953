"""Small builders shared by the codebook tests."""

import torch

from codebook_features.codebook import Codebook, CodebookConfig


def make_codebook(dtype: torch.dtype = torch.float32, **overrides: object) -> Codebook:
    """A small codebook with non-trivial LayerNorm parameters."""
    settings: dict = {"dim": 16, "num_codes": 40, "k": 3, "groups": 2} | overrides
    codebook = Codebook(CodebookConfig(**settings), dtype=dtype)
    if codebook.config.normalize_input:
        with torch.no_grad():
            codebook.norm_weight.uniform_(0.5, 1.5)
            codebook.norm_bias.normal_(0, 0.1)
    return codebook
