"""The differentiable pieces of the codebook forward pass, written for speed.

``combine_codes`` sums the code vectors named by ids. Its backward adds the incoming gradient
into the selected rows with one ``index_add_`` per slot, several times faster on CPU than the
sort-based backward of ``embedding_bag`` (on CPU, the compiled ``add_rows`` makes the same sums
in one call, faster still). ``straight_through`` passes the gradient around the
discrete choice without extra elementwise passes.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from codebook_features.codebook import native


def flat_code_ids(ids: Tensor, num_codes: int) -> Tensor:
    """Ids ``(..., G, slots)`` as rows of the ``(G * num_codes, d)`` table of all groups' codes.
    Empty slots (``-1``) point at their group's first row: give them zero weight."""
    offsets = torch.arange(ids.shape[-2], device=ids.device).view(-1, 1) * num_codes
    return ids.clamp_min(0) + offsets


def combine_codes(
    table: Tensor, bags: Tensor, valid: Tensor | None = None, scale: float = 1.0
) -> Tensor:
    """``scale * sum_j table[bags[:, j]]`` over the valid slots of each row of ``bags`` (R, m).

    ``valid`` (``(R, m)`` bool, optional) marks the slots that count; the others add nothing.
    """
    return _CombineCodes.apply(table, bags, valid, scale)


class _CombineCodes(torch.autograd.Function):
    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, table: Tensor, bags: Tensor, valid: Tensor | None, scale: float
    ) -> Tensor:
        # the scale rides on per-sample weights: cheaper than a separate multiplication
        weights = (
            torch.full(bags.shape, scale, dtype=table.dtype, device=table.device)
            if valid is None
            else valid.to(table.dtype) * scale
        )
        out = F.embedding_bag(bags, table, mode="sum", per_sample_weights=weights)
        ctx.save_for_backward(bags, valid)
        ctx.scale, ctx.table_shape = scale, table.shape
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        bags, valid = ctx.saved_tensors
        grad_table = grad.new_zeros(ctx.table_shape)
        scale_after = ctx.scale != 1.0 and grad_table.numel() < grad.numel()
        if ctx.scale != 1.0 and not scale_after:
            grad = grad * ctx.scale  # index_add_ with alpha != 1 is slow on CPU
        columns = bags.t().contiguous()  # contiguous ids per slot also index faster
        if _compiled_add(grad_table, grad, columns, valid):
            native.add_rows(grad_table, columns, grad.contiguous(), valid)
        else:
            for slot in range(columns.shape[0]):
                source = grad if valid is None else grad * valid[:, slot : slot + 1]
                grad_table.index_add_(0, columns[slot], source)
        if scale_after:
            grad_table.mul_(ctx.scale)
        return grad_table, None, None, None


def _compiled_add(table: Tensor, grad: Tensor, index: Tensor, valid: Tensor | None) -> bool:
    """Whether the compiled ``add_rows`` takes these (float32 on CPU, int64 ids, a contiguous
    bool mask); anything else goes through ``index_add_``, with the same sums."""
    return (
        table.device.type == "cpu"
        and table.dtype == grad.dtype == torch.float32
        and index.dtype == torch.int64
        and (valid is None or (valid.dtype == torch.bool and valid.is_contiguous()))
        and native.available()
    )


def straight_through(quantized: Tensor, inputs: Tensor, to_codes: bool = True) -> Tensor:
    """The value of ``quantized``; the gradient goes unchanged to ``inputs`` and, if
    ``to_codes``, to ``quantized`` as well."""
    return _StraightThrough.apply(quantized, inputs, to_codes)


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, quantized: Tensor, inputs: Tensor, to_codes: bool) -> Tensor:  # type: ignore[override]
        ctx.to_codes = to_codes
        return quantized.view_as(quantized)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor, None]:  # type: ignore[override]
        return (grad if ctx.to_codes else None), grad, None


def mean_sq_error(a: Tensor, b: Tensor) -> Tensor:
    """``|a - b|^2`` summed over features and groups, averaged over tokens, for ``(N, G, d)``
    inputs: each group is its own codebook with its own reconstruction term."""
    return F.mse_loss(a, b, reduction="sum") / a.shape[0]
