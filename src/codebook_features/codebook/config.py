"""Configuration of one codebook bottleneck, validated when it is built."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import model_validator
from typing_extensions import Self

from codebook_features.errors import CodebookError
from codebook_features.settings.base import (
    NonNegativeInt,
    NonNegativeNumber,
    PositiveInt,
    Settings,
)

Similarity = Literal["inner_product", "cosine", "euclidean"]
Aggregate = Literal["mean", "sum"]
LossVariant = Literal["base", "aeloss", "fullaeloss", "vqvae"]


@dataclass(frozen=True)
class LossTerms:
    """What a loss variant means, as three independent switches."""

    reconstruction: bool
    """Pull the selected codes toward the (stop-gradient) input: ``||y - sg(x)||^2``."""
    commitment: bool
    """Pull the input toward the (stop-gradient) output: ``beta * ||x - sg(y)||^2``."""
    task_gradient_to_codes: bool
    """Let the downstream gradient reach the selected codes (off only for ``vqvae``)."""


LOSS_TERMS: dict[str, LossTerms] = {
    "base": LossTerms(reconstruction=False, commitment=False, task_gradient_to_codes=True),
    "aeloss": LossTerms(reconstruction=True, commitment=False, task_gradient_to_codes=True),
    "fullaeloss": LossTerms(reconstruction=True, commitment=True, task_gradient_to_codes=True),
    "vqvae": LossTerms(reconstruction=True, commitment=True, task_gradient_to_codes=False),
}


class CodebookSettings(Settings):
    """How a codebook works, whatever the width of the activation it sits on.

    Shared by :class:`CodebookConfig` (one layer) and the model-level configuration, which
    applies the same settings to every site and fills in each site's width.
    """

    num_codes: PositiveInt
    """Codes per group (C)."""
    k: PositiveInt = 1
    """Codes selected per token and group."""
    similarity: Similarity = "inner_product"
    """``inner_product`` (x.c/|c|, ranks like cosine), ``cosine`` or ``euclidean``."""
    aggregate: Aggregate = "mean"
    """Combine the k selected codes by their ``mean`` (as the original code) or ``sum`` (paper)."""
    normalize_input: bool = True
    """LayerNorm each group's input (learnable affine) before the search, as the original."""
    loss: LossVariant = "aeloss"
    """``base``, ``aeloss`` (reconstruction), ``fullaeloss`` (+ commitment) or ``vqvae``."""
    recon_weight: NonNegativeNumber = 1.0
    """Weight (lambda) of the reconstruction and commitment terms in the returned loss."""
    commitment: NonNegativeNumber = 0.25
    """Commitment weight (beta) for ``fullaeloss`` and ``vqvae``."""
    chunk_size: PositiveInt | None = None
    """Tokens per search tile; ``None`` picks tiles of about 16 MiB of scores (256 tokens at
    least, so more with very large codebooks)."""
    dead_code_window: NonNegativeInt = 0
    """Re-seed codes unused for this many training calls from recent inputs; 0 turns it off."""
    dead_code_noise: NonNegativeNumber = 0.01
    """Norm of the noise added to a re-seeded code, relative to the input it copies."""

    @model_validator(mode="after")
    def _k_fits(self) -> Self:
        if self.k > self.num_codes:
            raise CodebookError(
                f"codebook k={self.k} is larger than num_codes={self.num_codes}: "
                "choose k <= num_codes"
            )
        return self

    @property
    def terms(self) -> LossTerms:
        """The switches the loss variant stands for."""
        return LOSS_TERMS[self.loss]

    def settings(self) -> dict[str, Any]:
        """The shared settings alone, as keyword arguments."""
        return {name: getattr(self, name) for name in CodebookSettings.model_fields}


class CodebookConfig(CodebookSettings):
    """One codebook bottleneck: ``groups`` independent codebooks of ``num_codes`` codes each.

    The input's last dimension (``dim``) is split into ``groups`` equal chunks, or the input is
    given per head as ``(..., groups, dim // groups)``. Each group replaces its chunk by the
    mean (or sum) of the ``k`` codes most similar to it.
    """

    dim: PositiveInt
    """Width of the input: the activation size, or heads x head size for per-head codebooks."""
    groups: PositiveInt = 1
    """Independent codebooks, each over ``dim // groups`` features (one per head for heads)."""

    @model_validator(mode="after")
    def _groups_divide(self) -> Self:
        if self.dim % self.groups != 0:
            raise CodebookError(
                f"codebook dim={self.dim} is not divisible by groups={self.groups}: "
                "choose a number of groups that divides the width"
            )
        return self

    @property
    def group_dim(self) -> int:
        """Width of one group's input."""
        return self.dim // self.groups
