"""Code-usage and reconstruction statistics, accumulated on the device without host syncs."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from codebook_features.codebook import native
from codebook_features.codebook.ops import flat_code_ids


def _stat_dtype(device: torch.device) -> torch.dtype:
    # float64 keeps long sums exact enough; MPS has no float64.
    return torch.float32 if device.type == "mps" else torch.float64


class CodeStats(nn.Module):
    """Running sums for one codebook layer of ``groups`` x ``num_codes`` codes.

    ``update`` only issues device ops (no ``.item()``), so it costs no synchronisation per call;
    ``summary`` reads the sums back once. Buffers are not saved with the model.
    """

    def __init__(self, groups: int, num_codes: int, group_dim: int) -> None:
        super().__init__()
        self.groups, self.num_codes = groups, num_codes
        dtype = _stat_dtype(torch.device("cpu"))
        self.register_buffer("counts", torch.zeros(groups, num_codes, dtype=torch.long), False)
        self.register_buffer("tokens", torch.zeros((), dtype=torch.long), False)
        self.register_buffer("sq_error", torch.zeros(groups, dtype=dtype), False)
        self.register_buffer("sum_input", torch.zeros(groups, group_dim, dtype=dtype), False)
        self.register_buffer("sq_input", torch.zeros(groups, dtype=dtype), False)
        self.register_buffer("input_norm", torch.zeros(groups, dtype=dtype), False)
        self.register_buffer("output_norm", torch.zeros(groups, dtype=dtype), False)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        # `model.to(torch.bfloat16)` would round the sums; keep them in their own precision.
        super()._apply(fn, recurse)
        for name, buf in self._buffers.items():
            if buf is not None and buf.is_floating_point():
                self._buffers[name] = buf.to(_stat_dtype(buf.device))
        return self

    @torch.no_grad()
    def update(self, inputs: Tensor, outputs: Tensor, ids: Tensor) -> None:
        """Add one call: ``inputs``/``outputs`` ``(N, G, d)`` in the codebook's space, ``ids``
        ``(N, G, k)`` with ``-1`` for empty slots."""
        valid = ids >= 0
        flat = flat_code_ids(ids, self.num_codes).reshape(-1)
        self.counts.view(-1).index_add_(0, flat, valid.reshape(-1).long())
        # add_ rather than +=: the same sums, without re-registering each buffer on the module
        self.tokens.add_(inputs.shape[0])
        if _compiled_sums(inputs, outputs):
            sums = native.stats_sums(inputs.contiguous(), outputs.contiguous())
            self.sq_error.add_(sums[:, 0])
            self.sq_input.add_(sums[:, 1])
            self.input_norm.add_(sums[:, 2])
            self.output_norm.add_(sums[:, 3])
            self.sum_input.add_(sums[:, 4:])
            return
        # reduce over this call in float32 (at least: float16 overflows), accumulate in float64
        if inputs.dtype in (torch.float16, torch.bfloat16):
            inputs, outputs = inputs.float(), outputs.float()
        dtype = self.sq_error.dtype
        in_norm = torch.linalg.vector_norm(inputs, dim=-1)
        self.sq_error.add_(
            torch.linalg.vector_norm(outputs - inputs, dim=-1).square().sum(0).to(dtype)
        )
        self.sum_input.add_(inputs.sum(0).to(dtype))
        self.sq_input.add_(in_norm.square().sum(0).to(dtype))
        self.input_norm.add_(in_norm.sum(0).to(dtype))
        self.output_norm.add_(torch.linalg.vector_norm(outputs, dim=-1).sum(0).to(dtype))

    def all_reduce(self) -> None:
        """Sum the statistics over all processes (a no-op when not distributed)."""
        from codebook_features.codebook.distributed import all_reduce_

        for buf in self._buffers.values():
            if buf is not None:
                all_reduce_(buf)

    def reset(self) -> None:
        for buf in self._buffers.values():
            if buf is not None:
                buf.zero_()

    def summary(self) -> dict[str, float]:
        """Statistics over all calls since the last reset (per token, averaged over groups).

        - ``active_codes``: codes used at least once; ``dead_fraction``: the rest, as a share.
        - ``mse``: squared error per token and group, ``|y - x|^2`` summed over features.
        - ``fvu``: fraction of variance unexplained, squared error over the input's variance.
        - ``entropy``: entropy (nats) of the code-usage distribution, averaged over groups.
        """
        n = int(self.tokens)
        counts = self.counts.double().cpu()
        active = int((counts > 0).sum())
        total = self.groups * self.num_codes
        out = {
            "tokens": float(n),
            "active_codes": float(active),
            "dead_fraction": 1.0 - active / total,
            "entropy": _mean_entropy(counts),
        }
        if n == 0:
            return {
                **out,
                "mse": math.nan,
                "fvu": math.nan,
                "input_norm": math.nan,
                "output_norm": math.nan,
            }
        variance = self.sq_input - self.sum_input.pow(2).sum(-1) / n
        out.update(
            mse=float(self.sq_error.sum()) / (n * self.groups),
            fvu=float(self.sq_error.sum() / variance.sum().clamp_min(1e-12)),
            input_norm=float(self.input_norm.sum()) / (n * self.groups),
            output_norm=float(self.output_norm.sum()) / (n * self.groups),
        )
        return out


def _compiled_sums(inputs: Tensor, outputs: Tensor) -> bool:
    """Whether the compiled kernel takes this call's sums (float32 on CPU, where the running
    sums are float64, in one pass)."""
    return (
        inputs.device.type == "cpu"
        and inputs.dtype == outputs.dtype == torch.float32
        and native.available()
    )


def _mean_entropy(counts: Tensor) -> float:
    totals = counts.sum(-1, keepdim=True)
    if float(totals.sum()) == 0:
        return 0.0
    p = counts / totals.clamp_min(1)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(-1)
    return float(entropy.mean())
