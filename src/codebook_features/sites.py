"""Where codebooks go in a Hugging Face causal LM: one table row of module paths per family.

A *site* is one place in one layer, named ``layers.<i>.<kind>``. Kinds:

- ``attn_heads``: each head's output before the attention output projection (the input of that
  projection, one codebook group per head; the paper's main placement),
- ``attn``: the attention module's output, after the projection,
- ``mlp``: the MLP module's output,
- ``mlp_hidden``: the MLP activation after the nonlinearity (the input of its output projection),
- ``block``: the residual stream after the whole block.

Wherever sites are named, a name may also be a kind (that site in every layer) or a glob over
names such as ``layers.*.attn_heads`` or ``layers.1[0-5].mlp`` (:func:`match_sites`); matches come
in natural order (``layers.2`` before ``layers.10``).

``attn_heads`` and ``mlp_hidden`` are taken by a forward pre-hook on a projection, the others by a
forward hook on a module; nothing of transformers' forward code is copied. Adding a family is one
row in :data:`FAMILIES`; unknown families are discovered by module names when that is unambiguous.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from codebook_features.errors import CodebookError

SITE_KINDS: tuple[str, ...] = ("attn_heads", "attn", "mlp", "mlp_hidden", "block")
PRE_HOOK_KINDS = frozenset({"attn_heads", "mlp_hidden"})


@dataclass(frozen=True)
class Family:
    """Module paths of one model family. ``layers`` is from the model root; the rest are
    relative to one decoder block."""

    layers: str
    attention: str
    attention_out: str
    mlp: str
    mlp_out: str


_LLAMA_LIKE = Family("model.layers", "self_attn", "self_attn.o_proj", "mlp", "mlp.down_proj")

FAMILIES: dict[str, Family] = {
    "gpt2": Family("transformer.h", "attn", "attn.c_proj", "mlp", "mlp.c_proj"),
    "gpt_neox": Family(
        "gpt_neox.layers", "attention", "attention.dense", "mlp", "mlp.dense_4h_to_h"
    ),
    "gpt_neo": Family("transformer.h", "attn", "attn.attention.out_proj", "mlp", "mlp.c_proj"),
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
}
"""``config.model_type`` -> module paths. Adding a family: one row here, one test."""

_DISCOVER = {
    "attention": ("self_attn", "attn", "attention", "self_attention"),
    "attention_out": ("o_proj", "out_proj", "dense", "c_proj"),
    "mlp": ("mlp", "feed_forward", "ffn"),
    "mlp_out": ("down_proj", "c_proj", "dense_4h_to_h", "fc2", "w2", "out_proj"),
}


@dataclass(frozen=True)
class SiteLocation:
    """One site resolved to the module whose hook carries it."""

    name: str
    kind: str
    layer: int
    module: nn.Module
    pre_hook: bool


def site_name(layer: int, kind: str) -> str:
    return f"layers.{layer}.{kind}"


def natural_key(name: str) -> tuple[Any, ...]:
    """Sort key that orders the numbers inside names by value (``layers.2`` < ``layers.10``)."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def is_site_pattern(text: str) -> bool:
    """Whether ``text`` names sites by a glob (``*``, ``?`` or ``[...]``)."""
    return any(c in text for c in "*?[")


def site_matches(pattern: str, name: str) -> bool:
    """Whether the site ``name`` is meant by ``pattern``: the name itself, its kind, or a glob."""
    if pattern == name or pattern == name.rsplit(".", 1)[-1]:
        return True
    return is_site_pattern(pattern) and fnmatch.fnmatchcase(name, pattern)


def match_sites(patterns: str | Iterable[str], available: Sequence[str]) -> list[str]:
    """The sites of ``available`` that ``patterns`` name (full names, kinds or globs), without
    repeats and in natural order. A pattern that matches nothing is an error listing what is
    there, so a typo never silently selects nothing."""
    wanted = [patterns] if isinstance(patterns, str) else list(patterns)
    chosen: set[str] = set()
    for pattern in wanted:
        if not isinstance(pattern, str):
            raise CodebookError(f"a site must be given as a string, got {pattern!r}")
        hits = [name for name in available if site_matches(pattern, name)]
        if not hits:
            raise CodebookError(
                f"no site matches {pattern!r}; this model has: {describe_sites(available)}"
            )
        chosen.update(hits)
    return sorted(chosen, key=natural_key)


def describe_sites(names: Iterable[str]) -> str:
    """All site names in natural order, for error messages."""
    ordered = sorted(names, key=natural_key)
    return ", ".join(ordered) if ordered else "no sites"


def family_of(model: nn.Module) -> Family:
    """The table row for this model, or one discovered from its module names."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    return _discover(model, model_type)


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    return _get(model, family_of(model).layers)


def resolve_sites(
    model: nn.Module, sites: Sequence[str], layers: str | list[int]
) -> list[SiteLocation]:
    """Every site the configuration asks for, in layer order.

    ``sites`` holds kinds, which apply to the chosen ``layers``, and full names or globs
    (``layers.1[0-5].mlp``), which name sites of any layer. Within a layer, sites come in the
    order of ``sites``.
    """
    family = family_of(model)
    blocks = _get(model, family.layers)
    chosen = set(select_layers(layers, len(blocks)))
    patterns = [entry for entry in sites if entry not in SITE_KINDS]
    every = [site_name(layer, kind) for layer in range(len(blocks)) for kind in SITE_KINDS]
    match_sites(patterns, every)  # each pattern must name at least one site of this model
    paths = {
        "attn_heads": family.attention_out,
        "attn": family.attention,
        "mlp": family.mlp,
        "mlp_hidden": family.mlp_out,
    }
    found: dict[str, SiteLocation] = {}
    for layer, block in enumerate(blocks):
        for entry in sites:
            if entry in SITE_KINDS:
                kinds = [entry] if layer in chosen else []
            else:
                kinds = [k for k in SITE_KINDS if site_matches(entry, site_name(layer, k))]
            for kind in kinds:
                name = site_name(layer, kind)
                if name not in found:
                    module = block if kind == "block" else _get(block, paths[kind])
                    found[name] = SiteLocation(name, kind, layer, module, kind in PRE_HOOK_KINDS)
    return list(found.values())


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


@torch.no_grad()
def site_widths(model: nn.Module, sites: list[SiteLocation]) -> dict[str, int]:
    """The feature width at every site, read off one tiny forward pass."""
    widths: dict[str, int] = {}

    def record(name: str, tensor: torch.Tensor) -> None:
        widths.setdefault(name, tensor.shape[-1])  # returns None: the hook changes nothing

    handles = []
    for site in sites:
        if site.pre_hook:
            hook = lambda m, args, name=site.name: record(name, args[0])  # noqa: E731
            handles.append(site.module.register_forward_pre_hook(hook))
        else:
            hook = lambda m, args, out, name=site.name: record(  # noqa: E731
                name, out[0] if isinstance(out, tuple) else out
            )
            handles.append(site.module.register_forward_hook(hook))
    device = next(model.parameters()).device
    try:
        model(input_ids=torch.zeros(1, 2, dtype=torch.long, device=device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return widths


def num_heads(model: nn.Module) -> int:
    config = model.config
    heads = getattr(config, "num_attention_heads", None)
    if not isinstance(heads, int):
        raise CodebookError(
            "the model config has no num_attention_heads; attn_heads codebooks need it"
        )
    return heads


def _get(root: nn.Module, path: str) -> nn.Module:
    try:
        return root.get_submodule(path)
    except AttributeError as error:
        raise CodebookError(
            f"module {path!r} not found in {type(root).__name__}: the family table in "
            "codebook_features/sites.py does not match this model"
        ) from error


def _discover(model: nn.Module, model_type: str | None) -> Family:
    """Find the family's paths from module names; refuse when anything is ambiguous."""
    fail = (
        f"unsupported model family {model_type!r}: its modules could not be matched safely; "
        "add a row for it to FAMILIES in codebook_features/sites.py"
    )
    count = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    lists = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) == count and name
    ]
    if len(lists) != 1:
        raise CodebookError(fail)
    block = model.get_submodule(lists[0])[0]
    children = dict(block.named_children())

    def unique(options: tuple[str, ...], names: dict[str, nn.Module]) -> str:
        hits = [n for n in options if n in names]
        if len(hits) != 1:
            raise CodebookError(fail)
        return hits[0]

    attention = unique(_DISCOVER["attention"], children)
    mlp = unique(_DISCOVER["mlp"], children)
    attention_out = unique(_DISCOVER["attention_out"], dict(children[attention].named_children()))
    mlp_out = unique(_DISCOVER["mlp_out"], dict(children[mlp].named_children()))
    return Family(lists[0], attention, f"{attention}.{attention_out}", mlp, f"{mlp}.{mlp_out}")
