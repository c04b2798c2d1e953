"""Configuration of one codebook bottleneck, validated when it is built."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from codebook_features.errors import CodebookError

Similarity = Literal["inner_product", "cosine", "euclidean"]
Aggregate = Literal["mean", "sum"]
LossVariant = Literal["base", "aeloss", "fullaeloss", "vqvae"]

SIMILARITIES: tuple[str, ...] = ("inner_product", "cosine", "euclidean")
AGGREGATES: tuple[str, ...] = ("mean", "sum")
LOSS_VARIANTS: tuple[str, ...] = ("base", "aeloss", "fullaeloss", "vqvae")


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


@dataclass(kw_only=True)
class CodebookSettings:
    """How a codebook works, whatever the width of the activation it sits on.

    Shared by :class:`CodebookConfig` (one layer) and the model-level configuration, which
    applies the same settings to every site and fills in each site's width.
    """

    num_codes: int
    """Codes per group (C)."""
    k: int = 1
    """Codes selected per token and group."""
    similarity: Similarity = "inner_product"
    """``inner_product`` (x.c/|c|, ranks like cosine), ``cosine`` or ``euclidean``."""
    aggregate: Aggregate = "mean"
    """Combine the k selected codes by their ``mean`` (as the original code) or ``sum`` (paper)."""
    normalize_input: bool = True
    """LayerNorm each group's input (learnable affine) before the search, as the original."""
    loss: LossVariant = "aeloss"
    """``base``, ``aeloss`` (reconstruction), ``fullaeloss`` (+ commitment) or ``vqvae``."""
    recon_weight: float = 1.0
    """Weight (lambda) of the reconstruction and commitment terms in the returned loss."""
    commitment: float = 0.25
    """Commitment weight (beta) for ``fullaeloss`` and ``vqvae``."""
    chunk_size: int | None = None
    """Tokens per search tile; ``None`` picks tiles of about 16 MiB of scores (256 tokens at
    least, so more with very large codebooks)."""
    dead_code_window: int = 0
    """Re-seed codes unused for this many training calls from recent inputs; 0 turns it off."""
    dead_code_noise: float = 0.01
    """Norm of the noise added to a re-seeded code, relative to the input it copies."""

    def __post_init__(self) -> None:
        for name in ("num_codes", "k"):
            _check_positive_int(name, getattr(self, name))
        if self.k > self.num_codes:
            raise CodebookError(
                f"codebook k={self.k} is larger than num_codes={self.num_codes}: "
                "choose k <= num_codes"
            )
        _check_choice("similarity", self.similarity, SIMILARITIES)
        _check_choice("aggregate", self.aggregate, AGGREGATES)
        _check_choice("loss", self.loss, LOSS_VARIANTS)
        for name in ("recon_weight", "commitment", "dead_code_noise"):
            value = getattr(self, name)
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise CodebookError(f"codebook {name} must be a finite number >= 0, got {value!r}")
        if self.chunk_size is not None:
            _check_positive_int("chunk_size", self.chunk_size)
        if (
            not isinstance(self.dead_code_window, int)
            or isinstance(self.dead_code_window, bool)
            or self.dead_code_window < 0
        ):
            raise CodebookError(
                "codebook dead_code_window must be an integer >= 0 (0 turns refresh off), "
                f"got {self.dead_code_window!r}"
            )

    @property
    def terms(self) -> LossTerms:
        """The switches the loss variant stands for."""
        return LOSS_TERMS[self.loss]

    def settings(self) -> dict[str, Any]:
        """The shared settings alone, as keyword arguments."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(CodebookSettings)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CodebookError(
                f"unknown codebook setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return cls(**data)


@dataclass(kw_only=True)
class CodebookConfig(CodebookSettings):
    """One codebook bottleneck: ``groups`` independent codebooks of ``num_codes`` codes each.

    The input's last dimension (``dim``) is split into ``groups`` equal chunks, or the input is
    given per head as ``(..., groups, dim // groups)``. Each group replaces its chunk by the
    mean (or sum) of the ``k`` codes most similar to it.
    """

    dim: int
    """Width of the input: the activation size, or heads x head size for per-head codebooks."""
    groups: int = 1
    """Independent codebooks, each over ``dim // groups`` features (one per head for heads)."""

    def __post_init__(self) -> None:
        for name in ("dim", "groups"):
            _check_positive_int(name, getattr(self, name))
        super().__post_init__()
        if self.dim % self.groups != 0:
            raise CodebookError(
                f"codebook dim={self.dim} is not divisible by groups={self.groups}: "
                "choose a number of groups that divides the width"
            )

    @property
    def group_dim(self) -> int:
        """Width of one group's input."""
        return self.dim // self.groups


def _check_positive_int(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise CodebookError(f"codebook {name} must be a positive integer, got {value!r}")


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CodebookError(
            f"unknown codebook {name} {value!r}: choose one of {', '.join(choices)}"
        )
