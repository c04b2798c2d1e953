"""Run a codebook model over a set of token sequences and keep what every site did:
its code ids for every token, and (optionally) its input activations (the "neurons")."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from codebook_features.model import CodebookModel


@dataclass
class CodeRecord:
    """Codes (and activations) of every site for every token of ``tokens``."""

    tokens: Tensor
    """``(sequences, length)`` token ids."""
    codes: dict[str, Tensor]
    """Site -> ``(sequences, length, groups, slots)`` code ids (``-1``: empty slot)."""
    activations: dict[str, Tensor] = field(default_factory=dict)
    """Site -> ``(sequences, length, width)`` input of the site's codebook, if recorded."""

    def flat_codes(self, site: str) -> Tensor:
        """``(tokens, groups, slots)``: one row per token, sequences concatenated."""
        codes = self.codes[site]
        return codes.reshape(-1, *codes.shape[2:])


@torch.no_grad()
def record_codes(
    cbm: CodebookModel,
    tokens: Tensor,
    batch_size: int = 64,
    activations: bool = False,
    progress: bool = False,
) -> CodeRecord:
    """Codes of every site of ``cbm`` for every token of ``tokens`` (codebooks active)."""
    device = next(cbm.parameters()).device
    codes: dict[str, list[Tensor]] = {name: [] for name in cbm.sites}
    acts: dict[str, list[Tensor]] = {name: [] for name in cbm.sites}
    handles = []
    if activations:
        for name in cbm.sites:
            handles.append(
                cbm.codebook(name).register_forward_pre_hook(
                    lambda m, args, name=name: (
                        acts[name].append(args[0].detach().float().cpu()) and None
                    )
                )
            )
    was_training = cbm.training
    cbm.eval()
    try:
        steps = range(0, len(tokens), batch_size)
        for start in tqdm(steps, desc="recording codes", disable=not progress):
            with cbm.capture() as captured:
                cbm(input_ids=tokens[start : start + batch_size].to(device), use_cache=False)
            for name in cbm.sites:
                codes[name].append(captured[name].to(torch.int32).cpu())
    finally:
        cbm.train(was_training)
        for handle in handles:
            handle.remove()
    return CodeRecord(
        tokens=tokens.cpu(),
        codes={name: torch.cat(parts) for name, parts in codes.items()},
        activations={name: torch.cat(parts) for name, parts in acts.items() if parts},
    )
