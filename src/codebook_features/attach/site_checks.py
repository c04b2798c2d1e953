"""What a site's hook sees must be what the site means; checked on one forward pass at attach.

Module names alone can mislead: Bloom's and MPT's MLP add the residual inside their forward,
so a hook on them would quantise the residual stream rather than the MLP's output; a looped
(recurrent-depth) model runs a block several times per token; some modules return lists or
flattened tensors. One tiny forward pass records each site's tensor beside its block's input
and output, and any site that is not what it means is refused with the reason, never silently
placed somewhere else. Each site tensor's in-place write counter, and a copy of its values,
compared after the pass, show which sites the model changes in place later (Falcon's parallel
MLP output, even where the added attention output is zero): their hooks hand over copies.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from codebook_features.attach.families import layer_heads, refusal, text_config
from codebook_features.attach.sites import SiteLocation
from codebook_features.attach.token_positions import unflatten
from codebook_features.errors import CodebookError


@dataclass
class _Seen:
    """What one hook saw during the pass: how often it ran, and its tensors."""

    calls: int = 0
    main: Tensor | None = None
    """The site's tensor: the module's output, or its input for a pre-hook site."""
    produced: Any = None
    """The module's output (for pre-hook sites: the projection's output)."""
    extra: list[Tensor] = field(default_factory=list)
    """Tensors passed to the module besides its main input."""
    kept: tuple[Tensor, int | None] | None = None
    """A copy of the site's tensor as the hook saw it, and its version counter, to tell
    whether the model changes it."""


def _keep(value: Any) -> tuple[Tensor, int | None] | None:
    if not (isinstance(value, Tensor) and _has_values(value)):
        return None
    return value.clone(), _version(value)


def _version(value: Tensor) -> int | None:
    """The tensor's in-place write counter (every in-place op bumps it, even one that leaves
    the values as they were, such as adding a zero attention output); inference tensors have
    none."""
    try:
        return value._version
    except RuntimeError:
        return None


def _changed(kept: tuple[Tensor, int | None] | None, now: Any) -> bool:
    if kept is None:
        return False
    copy, version = kept
    if version is not None and _version(now) != version:
        return True
    return not torch.equal(copy, now)


@dataclass
class SiteFacts:
    """What the attach pass found: each site's feature width, and the sites whose tensor the
    model changes in place after the hook has seen it (Falcon's parallel MLP output, to which
    it adds the attention output), which the hooks must hand over as copies."""

    widths: dict[str, int]
    changed_in_place: frozenset[str]
    heads: dict[str, int] = field(default_factory=dict)
    """Each attn_heads site's heads, as its layer's attention module has them."""


def first_tensor(value: Any) -> Any:
    """The activation in a module's output: a tensor, or the first item of a tuple or list."""
    return value[0] if isinstance(value, (tuple, list)) and value else value


def _inputs(args: tuple, kwargs: dict) -> tuple[Any, list[Tensor]]:
    """A module's main input (its first argument or ``hidden_states``) and its other tensors."""
    if args:
        main, rest = args[0], list(args[1:]) + list(kwargs.values())
    else:
        main = kwargs.get("hidden_states")
        rest = [v for k, v in kwargs.items() if k != "hidden_states"]
    return main, [t for t in rest if isinstance(t, Tensor)]


@torch.no_grad()
def check_sites(
    model: nn.Module, sites: Sequence[SiteLocation], blocks: Sequence[nn.Module], family: str
) -> SiteFacts:
    """The feature width at every site, read off one tiny forward pass that also checks each
    site carries what its kind means; a site that does not is refused with the reason."""
    ran = [_Seen() for _ in blocks]
    seen = {site.name: _Seen() for site in sites}
    projected = {site.name: _Seen() for site in sites if site.projection is not None}

    def on_block(record: _Seen, module: nn.Module, args: tuple, kwargs: dict, out: Any) -> None:
        record.calls += 1
        if record.calls == 1:
            record.main, _ = _inputs(args, kwargs)
            record.produced = first_tensor(out)
            record.kept = _keep(record.produced)

    def before(record: _Seen, pre: bool, module: nn.Module, args: tuple, kwargs: dict) -> None:
        record.calls += 1
        if record.calls == 1:
            main, record.extra = _inputs(args, kwargs)
            if pre:
                record.main = main
                record.kept = _keep(main)

    def after(record: _Seen, pre: bool, module: nn.Module, args: tuple, kw: dict, out: Any) -> None:
        if record.calls == 1:
            record.produced = first_tensor(out)
            if not pre:
                record.main = record.produced
                record.kept = _keep(record.main)

    handles = [
        block.register_forward_hook(
            lambda m, a, k, o, r=record: on_block(r, m, a, k, o), with_kwargs=True
        )
        for block, record in zip(blocks, ran, strict=True)
    ]
    for site in sites:
        record, pre = seen[site.name], site.pre_hook
        if site.kind == "block":
            continue
        handles.append(
            site.module.register_forward_pre_hook(
                lambda m, a, k, r=record, p=pre: before(r, p, m, a, k), with_kwargs=True
            )
        )
        handles.append(
            site.module.register_forward_hook(
                lambda m, a, k, o, r=record, p=pre: after(r, p, m, a, k, o), with_kwargs=True
            )
        )
    for site in sites:
        if site.projection is not None:
            record = projected[site.name]
            handles.append(
                site.projection.register_forward_hook(
                    lambda m, a, k, o, r=record: on_block(r, m, a, k, o), with_kwargs=True
                )
            )
    device = next(model.parameters()).device
    ids = _probe_tokens(model).to(device)
    modes = {module: module.training for module in model.modules()}
    model.eval()  # dropout would make a module's output differ from its projection's
    try:
        model(input_ids=ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes.items():
            module.training = training
    _check_depth(ran, sites, family)
    widths, changed, heads = {}, set(), {}
    for site in sites:
        record = ran[site.layer] if site.kind == "block" else seen[site.name]
        widths[site.name] = _check_site(site, record, ran[site.layer], ids.shape, family, model)
        if site.kind == "attn_heads":
            try:
                heads[site.name] = layer_heads(
                    model, blocks[site.layer], site.module, widths[site.name]
                )
            except CodebookError as error:
                raise _refuse(family, site, str(error)) from None
        if site.name in projected:
            _check_projection(site, record, projected[site.name], family)
        tensor = record.produced if site.kind == "block" else record.main
        if _changed(record.kept, tensor):
            changed.add(site.name)
    return SiteFacts(widths, frozenset(changed), heads)


def _probe_tokens(model: nn.Module) -> Tensor:
    """Six distinct tokens, none of them special (a padding embedding may be all zeros, which
    would make every activation alike)."""
    config = text_config(model)
    vocab = getattr(config, "vocab_size", None) or 8
    special = [getattr(config, f"{k}_token_id", None) for k in ("pad", "bos", "eos")]
    usable = [i for i in range(min(vocab, 16)) if i not in special] or list(range(vocab))
    return torch.tensor([usable[i % len(usable)] for i in range(6)]).reshape(2, 3)


def _refuse(family: str, site: SiteLocation, reason: str) -> CodebookError:
    return refusal(family, site.name, reason)


def _check_depth(ran: list[_Seen], sites: Sequence[SiteLocation], family: str) -> None:
    """Refuse looped models: a block that runs more than once per pass would have one codebook
    for several depths, and the KV cache moves several times per token, so the positions of
    interventions would drift in cached generation."""
    looped = [(i, r.calls) for i, r in enumerate(ran) if r.calls > 1]
    if looped and sites:
        layer, calls = looped[0]
        raise _refuse(
            family,
            sites[0],
            f"layer {layer} runs {calls} times per forward pass (a looped, recurrent-depth "
            "model), so a codebook there would serve several depths and cached positions drift",
        )


def _check_site(
    site: SiteLocation,
    record: _Seen,
    block: _Seen,
    shape: torch.Size,
    family: str,
    model: nn.Module,
) -> int:
    def refuse(reason: str) -> CodebookError:
        return _refuse(family, site, reason)

    if block.calls == 0:
        raise refuse(f"layer {site.layer} did not run in a forward pass")
    if record.calls != 1:
        raise refuse(f"its module ran {record.calls} times in one pass of its layer")
    if site.kind == "block":
        x = _before_change(block, block.produced)
    else:
        x = _before_change(record, record.main)
    if not isinstance(x, Tensor) or not x.is_floating_point():
        raise refuse(f"its module gives a {type(x).__name__}, not an activation tensor")
    tokens = unflatten(x, (shape[0], shape[1]))  # flattened tokens: CodebookModel.over_tokens
    x = x if tokens is None else tokens
    if x.ndim != 3 or tuple(x.shape[:2]) != tuple(shape):
        raise refuse(
            f"its tensor has shape {tuple(x.shape)}, not (batch, seq, features) = "
            f"({shape[0]}, {shape[1]}, ...)"
        )
    hidden = x if site.kind == "block" else _before_change(block, block.produced)
    if not isinstance(hidden, Tensor) or hidden.ndim != 3:
        raise refuse("its block does not give one (batch, seq, features) tensor")
    stream = block.main
    if site.kind == "block" and isinstance(stream, Tensor) and stream.shape[-1] != x.shape[-1]:
        raise refuse(
            f"its block gives {x.shape[-1]} features, not the {stream.shape[-1]} of the residual "
            "stream it is given"
        )
    if site.kind in ("attn", "mlp") and x.shape != hidden.shape:
        raise refuse(
            f"its output has {x.shape[-1]} features, not the residual stream's {hidden.shape[-1]}"
        )
    width = int(x.shape[-1])
    if site.kind in ("attn", "mlp"):
        if _same(x, hidden):
            raise refuse(
                "its output is the block's output: the module adds the residual stream inside"
            )
        if _same(x, block.main):
            raise refuse("its output is the block's input (the residual stream)")
        if any(t.shape[-1] == width and t.numel() == x.numel() for t in record.extra):
            raise refuse(
                "its module is given the residual stream besides its input and may add it "
                "inside; name the projection that carries the site in "
                "codebook_features/attach/families.py"
            )
    if site.kind in ("attn_heads", "mlp_hidden"):
        out = record.produced
        if not isinstance(out, Tensor) or not isinstance(hidden, Tensor):
            raise refuse("its projection does not give an activation tensor")
        if out.shape[-1] != hidden.shape[-1]:
            raise refuse(
                f"its projection gives {out.shape[-1]} features, not the residual stream's "
                f"{hidden.shape[-1]}"
            )
    return width


def _before_change(record: _Seen, tensor: Any) -> Any:
    """``tensor`` (the record's site tensor) as its hook saw it, before the model changed it
    in place, if it did."""
    return record.kept[0] if record.kept is not None else tensor


def _check_projection(site: SiteLocation, record: _Seen, projection: _Seen, family: str) -> None:
    """An attn or mlp module's output must be its output projection's: a module that adds
    the residual stream or normalises after projecting (BERT's) carries something else."""
    out = _before_change(projection, projection.produced)
    if projection.calls != 1 or not isinstance(out, Tensor):
        raise _refuse(family, site, f"its output projection ran {projection.calls} times")
    main = _before_change(record, record.main)
    out = out.reshape(main.shape) if out.numel() == main.numel() else out
    if _has_values(main) and _has_values(out) and not _equal(main, out):
        raise _refuse(
            family,
            site,
            "its output is not its output projection's: the module changes it after "
            "projecting (adds the residual stream or normalises)",
        )


def _same(a: Any, b: Any) -> bool:
    """Whether an activation is another one that is not all zeros (two zero tensors say
    nothing about where a module's output comes from)."""
    return _equal(a, b) and bool(a.any())


def _equal(a: Any, b: Any) -> bool:
    """Whether two activations are equal; tensors without values (meta or fake ones, used to
    check a large model's sizes) are never equal here."""
    return (
        isinstance(a, Tensor)
        and isinstance(b, Tensor)
        and a.shape == b.shape
        and _has_values(a)
        and _has_values(b)
        and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-6)
    )


def _has_values(tensor: Tensor) -> bool:
    from torch._subclasses.fake_tensor import is_fake

    return not tensor.is_meta and not is_fake(tensor)
