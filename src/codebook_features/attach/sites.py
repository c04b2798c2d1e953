"""Where codebooks go in a Hugging Face causal LM: one table row of module paths per family.

A *site* is one place in one layer, named ``layers.<i>.<kind>``. Kinds:

- ``attn_heads``: each head's output before the attention output projection (the input of that
  projection, one codebook group per head; the paper's main placement),
- ``attn``: the attention module's output, after the projection,
- ``mlp``: the MLP module's output (in a mixture-of-experts layer, the whole sparse block's),
- ``mlp_hidden``: the MLP activation after the nonlinearity (the input of its output projection),
- ``block``: the residual stream after the whole block.

Wherever sites are named, a name may also be a kind (that site in every layer) or a glob over
names such as ``layers.*.attn_heads`` or ``layers.1[0-5].mlp`` (:func:`match_sites`); matches come
in natural order (``layers.2`` before ``layers.10``).

``attn_heads`` and ``mlp_hidden`` are taken by a forward pre-hook on a projection, the others by a
forward hook on a module; nothing of transformers' forward code is copied. Which module carries
which site is in :mod:`codebook_features.attach.families` (a table row per family, or discovery
by module names), and :mod:`codebook_features.attach.site_checks` checks at attach time that each
site's tensor is what the site means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from codebook_features.attach.families import Plan, plan_sites, refusal
from codebook_features.attach.site_names import SITE_KINDS, match_sites, site_matches, site_name
from codebook_features.errors import CodebookError

PRE_HOOK_KINDS = frozenset({"attn_heads", "mlp_hidden"})


@dataclass(frozen=True)
class SiteLocation:
    """One site resolved to the module whose hook carries it."""

    name: str
    kind: str
    layer: int
    module: nn.Module
    pre_hook: bool
    projection: nn.Module | None = None
    """attn and mlp: the output projection inside ``module`` whose output must be its output."""


def resolve_sites(
    model: nn.Module, sites: Sequence[str], layers: str | list[int]
) -> tuple[list[SiteLocation], Plan]:
    """Every site the configuration asks for, in layer order, and the model's site plan.

    ``sites`` holds kinds, which apply to the chosen ``layers``, and full names or globs
    (``layers.1[0-5].mlp``), which name sites of any layer. Within a layer, sites come in the
    order of ``sites``. A site that the model's family cannot carry in that layer is refused with
    the reason (:mod:`codebook_features.attach.families`).
    """
    plan = plan_sites(model)
    blocks = plan.blocks
    chosen = set(select_layers(layers, len(blocks)))
    patterns = [entry for entry in sites if entry not in SITE_KINDS]
    every = [site_name(layer, kind) for layer in range(len(blocks)) for kind in SITE_KINDS]
    match_sites(patterns, every)  # each pattern must name at least one site of this model
    found: dict[str, SiteLocation] = {}
    refused: list[tuple[str, str]] = []
    for layer, block in enumerate(blocks):
        where = plan.per_layer[layer]
        for entry in sites:
            if entry in SITE_KINDS:
                kinds = [entry] if layer in chosen else []
            else:
                kinds = [k for k in SITE_KINDS if site_matches(entry, site_name(layer, k))]
            for kind in kinds:
                name = site_name(layer, kind)
                if name in found:
                    continue
                if kind in where.refused:
                    refused.append((name, where.refused[kind]))
                    continue
                module = block if kind == "block" else block.get_submodule(where.paths[kind])
                projection = where.projections.get(kind)
                found[name] = SiteLocation(
                    name,
                    kind,
                    layer,
                    module,
                    kind in PRE_HOOK_KINDS,
                    projection and block.get_submodule(projection),
                )
    if refused:
        name, reason = refused[0]
        kind = name.rsplit(".", 1)[-1]
        elsewhere = [i for i, p in enumerate(plan.per_layer) if kind in p.paths]
        raise refusal(plan.family, name, reason, len(refused) - 1, elsewhere)
    return list(found.values()), plan


def select_layers(layers: str | list[int], count: int) -> list[int]:
    """``"all"`` or a list of indices (negative ones count from the end) -> sorted indices."""
    if layers == "all":
        return list(range(count))
    if isinstance(layers, str) or not all(isinstance(i, int) for i in layers):
        raise CodebookError(f"layers must be 'all' or a list of integers, got {layers!r}")
    chosen = set()
    for i in layers:
        if not -count <= i < count:
            raise CodebookError(
                f"layer {i} is out of range: the model has {count} layers (0..{count - 1}, "
                f"or -{count}..-1 from the end)"
            )
        chosen.add(i % count)
    return sorted(chosen)
