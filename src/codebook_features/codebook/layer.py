"""The codebook bottleneck: replace an activation by the mean (or sum) of its top-k codes."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from codebook_features.codebook.config import CodebookConfig
from codebook_features.codebook.dead_codes import reseed_codes
from codebook_features.codebook.distributed import all_reduce_, broadcast_
from codebook_features.codebook.kmeans import kmeans
from codebook_features.codebook.ops import (
    combine_codes,
    flat_code_ids,
    mean_sq_error,
    straight_through,
)
from codebook_features.codebook.search import Exclusion, search_codes
from codebook_features.codebook.stats import CodeStats
from codebook_features.errors import CodebookError, deprecated

RECENT_INPUTS = 1024
"""Inputs per group kept from the last training call, to re-seed dead codes from."""

ExclusionFn = Callable[[torch.Size], "tuple[Tensor, Tensor | None] | None"]
"""Called with the leading shape of each input; returns a ``(G, C)`` mask of codes that may not be
chosen and an optional mask of the leading shape saying where (``None``: everywhere)."""


class CodebookOutput(NamedTuple):
    output: Tensor
    """Quantised activation, same shape and dtype as the input."""
    ids: Tensor
    """Code ids ``(..., G, k)`` (more slots if a hook added some; ``-1`` marks an empty slot)."""
    loss: Tensor
    """Scalar to add to the training objective: ``lambda * (reconstruction + beta * commitment)``
    as the loss variant asks (zero for ``base``)."""

    @property
    def codes(self) -> Tensor:
        """Deprecated name of :attr:`ids`."""
        deprecated("CodebookOutput.codes", "CodebookOutput.ids")
        return self.ids


class CodeHook(nn.Module):
    """Identity on code ids: a named place for forward hooks to read ids or return new ones."""

    def forward(self, ids: Tensor) -> Tensor:
        return ids


class Codebook(nn.Module):
    """A top-k vector-quantisation bottleneck with ``groups`` independent codebooks.

    Input ``(..., dim)`` is split into ``groups`` chunks, or given per head as
    ``(..., groups, dim // groups)``. Each chunk is (optionally) LayerNormed, compared with its
    group's codes, and replaced by the mean (or sum) of the ``k`` most similar codes. The
    gradient passes straight through to the input; the codes learn from the downstream gradient
    and from the loss returned with the output.

    Words: the learned vectors are :attr:`vectors` ``(G, C, d)``; a token's chosen codes are
    named by their *ids* ``(..., G, k)``, one per slot.

    Code ids pass through ``hook_codes`` (a :class:`CodeHook`), where forward hooks can capture
    them or return new ids; the output is then computed from the returned ids. Slots holding
    ``-1`` are empty. With ``aggregate="mean"`` every slot carries weight ``1/k``, so removing or
    adding a code changes the output by exactly that code's share.

    A group of a token whose input holds NaN or inf is not quantised: its ids are ``-1`` and its
    output is NaN, so the fault shows downstream (and in the loss) instead of being hidden
    behind arbitrary codes; statistics and dead-code re-seeding count it as zeros.
    """

    def __init__(
        self,
        config: CodebookConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        groups, num_codes, group_dim = config.groups, config.num_codes, config.group_dim
        factory = {"device": device, "dtype": dtype}
        self.vectors = nn.Parameter(torch.randn(groups, num_codes, group_dim, **factory))
        if config.normalize_input:
            self.norm_weight = nn.Parameter(torch.ones(groups, group_dim, **factory))
            self.norm_bias = nn.Parameter(torch.zeros(groups, group_dim, **factory))
        self.hook_codes = CodeHook()
        self.stats = CodeStats(groups, num_codes, group_dim).to(device)
        self.track_stats = True
        self.training_calls = 0
        self.register_buffer(
            "last_used", torch.zeros(groups, num_codes, dtype=torch.long, device=device), False
        )
        pool = RECENT_INPUTS if config.dead_code_window else 0  # only refresh needs it
        self.register_buffer(
            "recent_inputs", torch.zeros(groups, pool, group_dim, **factory), False
        )
        self._exclusions: OrderedDict[int, ExclusionFn] = OrderedDict()

    @property
    def codes(self) -> Tensor:
        """Deprecated name of :attr:`vectors`."""
        deprecated("Codebook.codes", "Codebook.vectors")
        return self.vectors

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
        # files saved before the vectors had their own name store them as ``codes``
        old = prefix + "codes"
        if old in state_dict and prefix + "vectors" not in state_dict:
            state_dict[prefix + "vectors"] = state_dict.pop(old)
        super()._load_from_state_dict(state_dict, prefix, *args)

    # ----------------------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> CodebookOutput:
        cfg = self.config
        lead = self.leading_shape(x)
        window = cfg.dead_code_window
        if self.training and window and self.training_calls and self.training_calls % window == 0:
            self.refresh_dead_codes()
        inputs = self.normalize(x.reshape(-1, cfg.groups, cfg.group_dim).to(self.vectors.dtype))
        # a token whose input holds NaN or inf gets no codes and a NaN output (not masked)
        # (N, G, 1): a sum is NaN or inf when a value is (half precision is summed in float32,
        # so it cannot overflow), and far cheaper than testing every value
        wide = torch.promote_types(inputs.dtype, torch.float32)
        finite = inputs.detach().sum(-1, keepdim=True, dtype=wide).isfinite()
        # on CPU, knowing that every token is finite (the usual case) saves three full passes
        # over the activations; on an accelerator the test would stall the host, so mask anyway
        masked = x.device.type != "cpu" or not bool(finite.all())
        clean = torch.where(finite, inputs.detach(), 0.0) if masked else inputs.detach()
        found = search_codes(
            clean.transpose(0, 1).contiguous(),
            self.vectors.detach(),
            cfg.k,
            cfg.similarity,
            cfg.chunk_size,
            self._collect_exclusions(lead, x.device),
        ).transpose(0, 1)
        # contiguous either way: callers may view the ids flat
        marked = (torch.where(finite, found, -1) if masked else found.contiguous()).reshape(
            *lead, cfg.groups, cfg.k
        )
        ids = self.hook_codes(marked)
        # a hook may also edit the ids in place and return nothing
        rewritten = ids is not marked or bool(self.hook_codes._forward_hooks)
        if rewritten:
            self._check_ids(ids, lead)
        flat_ids = ids.reshape(-1, cfg.groups, ids.shape[-1])
        quantized = self.decode(flat_ids if rewritten else found, has_empty_slots=rewritten)
        if masked:
            quantized = quantized.masked_fill(~finite, torch.nan)
        output, loss = self._straight_through(inputs, quantized)
        # statistics and the dead-code pool see non-finite tokens as zeros, so one bad token
        # neither poisons the statistics nor re-seeds codes with NaN
        if self.track_stats:
            seen = quantized.detach()
            self.stats.update(clean, seen.masked_fill(~finite, 0.0) if masked else seen, flat_ids)
        if self.training:
            self._note_training_call(clean, flat_ids)
        return CodebookOutput(output.reshape(x.shape).to(x.dtype), ids, loss)

    def leading_shape(self, x: Tensor) -> torch.Size:
        """The shape before the feature dimension(s); raises on any other input shape."""
        cfg = self.config
        if not x.is_floating_point():
            raise CodebookError(f"codebook input must be a floating-point tensor, got {x.dtype}")
        if x.ndim >= 1 and x.shape[-1] == cfg.dim:
            return x.shape[:-1]
        if cfg.groups > 1 and x.ndim >= 2 and tuple(x.shape[-2:]) == (cfg.groups, cfg.group_dim):
            return x.shape[:-2]
        heads = f" or (..., {cfg.groups}, {cfg.group_dim})" if cfg.groups > 1 else ""
        raise CodebookError(
            f"codebook expects input of shape (..., {cfg.dim}){heads}, got {tuple(x.shape)}: "
            "check that the codebook's dim and groups match the activation it is applied to"
        )

    def normalize(self, x: Tensor) -> Tensor:
        """Per-group LayerNorm of ``(N, G, d)`` inputs (identity when turned off)."""
        if not self.config.normalize_input:
            return x
        return torch.addcmul(
            self.norm_bias, F.layer_norm(x, x.shape[-1:], eps=1e-5), self.norm_weight
        )

    def decode(self, ids: Tensor, has_empty_slots: bool = True) -> Tensor:
        """Combine the codes named by ``ids`` ``(N, G, m)``; ``-1`` slots add nothing.

        Each slot carries weight ``1/k`` (mean) or 1 (sum). Differentiable in the codes.
        """
        cfg = self.config
        n, groups, slots = ids.shape
        table = self.vectors.reshape(groups * cfg.num_codes, cfg.group_dim)
        scale = 1.0 / cfg.k if cfg.aggregate == "mean" else 1.0
        if has_empty_slots:
            valid = ids >= 0
            bags = flat_code_ids(ids, cfg.num_codes).reshape(n * groups, slots)
            out = combine_codes(table, bags, valid.reshape(n * groups, slots), scale)
        else:
            bags = flat_code_ids(ids, cfg.num_codes).reshape(n * groups, slots)
            out = combine_codes(table, bags, None, scale)
        return out.view(n, groups, cfg.group_dim)

    def _straight_through(self, inputs: Tensor, quantized: Tensor) -> tuple[Tensor, Tensor]:
        """Output whose value is ``quantized`` and whose gradient reaches ``inputs`` unchanged,
        plus the weighted auxiliary loss."""
        cfg, terms = self.config, self.config.terms
        output = straight_through(quantized, inputs, terms.task_gradient_to_codes)
        loss = inputs.new_zeros(())
        if terms.reconstruction:
            loss = loss + mean_sq_error(quantized, inputs.detach())
        if terms.commitment:
            loss = loss + cfg.commitment * mean_sq_error(inputs, quantized.detach())
        return output, cfg.recon_weight * loss

    def _check_ids(self, ids: Tensor, lead: torch.Size) -> None:
        cfg = self.config
        if not isinstance(ids, Tensor) or ids.dtype not in (torch.int32, torch.int64):
            raise CodebookError("a hook on hook_codes must return an integer tensor of code ids")
        if ids.ndim != len(lead) + 2 or tuple(ids.shape[:-1]) != (*lead, cfg.groups):
            raise CodebookError(
                f"a hook on hook_codes returned ids of shape {tuple(ids.shape)}; expected "
                f"{(*lead, cfg.groups)} followed by the number of slots"
            )
        if ids.numel() and (int(ids.min()) < -1 or int(ids.max()) >= cfg.num_codes):
            raise CodebookError(
                f"a hook on hook_codes returned a code id outside [-1, {cfg.num_codes - 1}]"
            )

    # ----------------------------------------------------------------------- exclusions
    def register_exclusion(self, fn: ExclusionFn) -> RemovableHandle:
        """Keep some codes out of the search, so the next-best codes take their slots.

        ``fn`` is called on every forward with the input's leading shape and returns a ``(G, C)``
        bool mask of excluded codes plus an optional bool mask of the leading shape (where to
        exclude them), or ``None`` to exclude nothing on this call. Remove with the handle.
        """
        handle = RemovableHandle(self._exclusions)
        self._exclusions[handle.id] = fn
        return handle

    def _collect_exclusions(self, lead: torch.Size, device: torch.device) -> list[Exclusion]:
        found: list[Exclusion] = []
        for fn in self._exclusions.values():
            result = fn(lead)
            if result is None:
                continue
            codes, where = result
            if tuple(codes.shape) != (self.config.groups, self.config.num_codes):
                raise CodebookError(
                    f"an exclusion returned a code mask of shape {tuple(codes.shape)}; expected "
                    f"{(self.config.groups, self.config.num_codes)}"
                )
            codes = codes.to(device=device, dtype=torch.bool)
            if where is not None:
                where = where.to(device=device, dtype=torch.bool).reshape(-1)
                if where.numel() != lead.numel():
                    raise CodebookError(
                        f"an exclusion returned a token mask of {where.numel()} elements for an "
                        f"input of leading shape {tuple(lead)}; it must have that shape"
                    )
            found.append((codes, where))
        return found

    # -------------------------------------------------------- initialisation and upkeep
    @torch.no_grad()
    def init_kmeans(self, samples: Tensor, iters: int = 20, seed: int = 0) -> None:
        """Set the codes to k-means centres of the (normalised) sample activations.

        ``samples`` has the shape of a forward input; at least ``num_codes`` tokens are needed.
        Under data-parallel training rank 0's centres are sent to every process.
        """
        cfg = self.config
        self.leading_shape(samples)
        flat = samples.reshape(-1, cfg.groups, cfg.group_dim).to(self.vectors)
        bad = (~torch.isfinite(flat)).any(-1).any(-1).sum()
        all_reduce_(bad, "max")  # every process raises, or none does (no hang)
        if int(bad):
            raise CodebookError(
                f"k-means samples hold NaN or inf in {int(bad)} of {flat.shape[0]} tokens (on "
                "some process): check the activations (or drop those tokens) before initialising"
            )
        fewest = torch.tensor(flat.shape[0], device=flat.device)
        all_reduce_(fewest, "min")  # every process raises, or none does (no hang)
        if int(fewest) < cfg.num_codes:
            raise CodebookError(
                f"k-means needs at least num_codes={cfg.num_codes} sample tokens, got "
                f"{int(fewest)}: pass more activations"
            )
        data = self.normalize(flat).transpose(0, 1).contiguous()
        self.vectors.copy_(kmeans(data, cfg.num_codes, iters, seed, cfg.chunk_size))
        broadcast_(self.vectors.data)

    @torch.no_grad()
    def refresh_dead_codes(self) -> int:
        """Re-seed codes that no token chose during the last ``dead_code_window`` training calls.

        Runs on its own every ``dead_code_window`` training calls; returns how many were
        re-seeded. Usage is combined over processes, and rank 0's new codes are broadcast.
        """
        window = self.config.dead_code_window
        if not window or self.training_calls < window:
            return 0
        all_reduce_(self.last_used, "max")
        dead = self.last_used <= self.training_calls - window
        count = reseed_codes(
            self.vectors.data, dead, self.recent_inputs, self.config.dead_code_noise
        )
        broadcast_(self.vectors.data)
        self.last_used.masked_fill_(dead, self.training_calls)
        return count

    @torch.no_grad()
    def _note_training_call(self, inputs: Tensor, ids: Tensor) -> None:
        self.training_calls += 1
        if not self.config.dead_code_window:
            return
        flat = flat_code_ids(ids, self.config.num_codes).reshape(-1)
        stamp = (ids >= 0).reshape(-1).long() * self.training_calls
        self.last_used.view(-1).scatter_reduce_(0, flat, stamp, reduce="amax")
        if inputs.shape[0]:
            pick = torch.randint(inputs.shape[0], (RECENT_INPUTS,), device=inputs.device)
            self.recent_inputs.copy_(inputs[pick].transpose(0, 1))

    def reset_stats(self) -> None:
        self.stats.reset()

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"dim={cfg.dim}, groups={cfg.groups}, num_codes={cfg.num_codes}, k={cfg.k}, "
            f"similarity={cfg.similarity}, aggregate={cfg.aggregate}, loss={cfg.loss}"
        )
