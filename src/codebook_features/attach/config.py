"""Which sites of a model get codebooks, with which settings (:class:`CodebookModelConfig`).

Kept apart from the model so that reading settings (``codebook train --help``, a saved model's
``codebook_config.json``) does not import torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from typing_extensions import Self

from codebook_features.attach.site_names import SITE_KINDS, is_site_pattern
from codebook_features.codebook.config import CodebookConfig, CodebookSettings
from codebook_features.errors import CodebookError
from codebook_features.settings.base import Int, PositiveInt


class CodebookModelConfig(CodebookSettings):
    """Which sites of which layers get codebooks, and the codebook settings they share."""

    sites: list[str] = Field(default_factory=lambda: ["attn_heads"])
    """Site kinds in each chosen layer (attn_heads, attn, mlp, mlp_hidden, block), and/or sites
    of any layer by name or glob, e.g. ``layers.1[0-5].mlp`` or ``layers.*.block``."""
    layers: Literal["all"] | list[Int] = "all"
    """``all`` or a list of layer indices (negative ones count from the end)."""
    groups: PositiveInt = 1
    """Groups of the codebooks at sites other than attn_heads (which has one per head)."""
    per_site: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Settings that differ by site kind, e.g. ``{"mlp": {"k": 4, "num_codes": 512}}``."""

    @model_validator(mode="after")
    def _sites_and_overrides(self) -> Self:
        if not self.sites:
            raise CodebookError("sites is empty: name at least one of " + ", ".join(SITE_KINDS))
        for entry in self.sites:
            if entry not in SITE_KINDS and not _names_sites(entry):
                raise CodebookError(
                    f"unknown site {entry!r}: give a kind ({', '.join(SITE_KINDS)}) or sites by "
                    "name or glob, e.g. layers.3.mlp or layers.*.attn_heads"
                )
        if len(set(self.sites)) != len(self.sites):
            raise CodebookError(f"sites lists a kind twice: {self.sites}")
        if self.layers != "all" and not self.layers:
            raise CodebookError("layers must be 'all' or a non-empty list of integers, got []")
        for kind, overrides in self.per_site.items():
            if kind not in SITE_KINDS or not any(
                entry == kind or _names_sites(entry) for entry in self.sites
            ):
                raise CodebookError(
                    f"per_site names {kind!r}, which is not in sites {self.sites} "
                    "(per_site keys are site kinds)"
                )
            allowed = set(CodebookSettings.model_fields)
            if kind != "attn_heads":
                allowed.add("groups")
            unknown = sorted(set(overrides) - allowed)
            if unknown:
                raise CodebookError(
                    f"per_site[{kind!r}] has unknown setting(s) {', '.join(unknown)}; "
                    f"allowed: {', '.join(sorted(allowed))}"
                )
            CodebookSettings.from_dict(  # validates, naming the override
                self.settings() | _only_settings(overrides), where=f"per_site.{kind}"
            )
        return self

    def site_config(self, kind: str, width: int, heads: int) -> CodebookConfig:
        """The codebook for one site of ``kind`` whose activation has ``width`` features."""
        overrides = self.per_site.get(kind, {})
        groups = heads if kind == "attn_heads" else overrides.get("groups", self.groups)
        settings = self.settings() | _only_settings(overrides)
        return CodebookConfig(dim=width, groups=groups, **settings)


def _only_settings(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in overrides.items() if k in CodebookSettings.model_fields}


def _names_sites(entry: Any) -> bool:
    """Whether a ``sites`` entry is a full site name or a glob (rather than a kind)."""
    return isinstance(entry, str) and (entry.startswith("layers.") or is_site_pattern(entry))
