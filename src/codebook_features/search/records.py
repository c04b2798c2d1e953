"""Run a codebook model over a set of token sequences and keep what every site did:
its code ids for every token, and (optionally) its input activations (the "neurons").

Everything is held in memory: this is for token sets that fit (TokFSM's validation set, a few
thousand sentences).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm

from codebook_features.attach.model import CodebookModel, SiteSpec
from codebook_features.errors import deprecated


@dataclass
class CodeRecord:
    """Codes (and activations) of every site for every token of ``tokens``."""

    tokens: Tensor
    """``(sequences, length)`` token ids."""
    ids: dict[str, Tensor]
    """Site -> ``(sequences, length, groups, slots)`` code ids (``-1``: empty slot)."""
    activations: dict[str, Tensor] = field(default_factory=dict)
    """Site -> ``(sequences, length, width)`` input of the site's codebook, if recorded."""

    def flat_ids(self, site: str) -> Tensor:
        """``(tokens, groups, slots)``: one row per token, sequences concatenated."""
        ids = self.ids[site]
        return ids.reshape(-1, *ids.shape[2:])

    @property
    def codes(self) -> dict[str, Tensor]:
        """Deprecated name of :attr:`ids`."""
        deprecated("CodeRecord.codes", "CodeRecord.ids")
        return self.ids

    def flat_codes(self, site: str) -> Tensor:
        """Deprecated name of :meth:`flat_ids`."""
        deprecated("CodeRecord.flat_codes", "CodeRecord.flat_ids")
        return self.flat_ids(site)


@torch.no_grad()
def record_codes(
    cbm: CodebookModel,
    tokens: Tensor,
    batch_size: int = 64,
    activations: bool = False,
    progress: bool = False,
    sites: SiteSpec = None,
) -> CodeRecord:
    """Codes of the chosen sites (all by default) of ``cbm`` for every token of ``tokens``,
    with the codebooks active; with ``activations``, also each site's codebook input."""
    device = next(cbm.parameters()).device
    names = cbm.select_sites(sites)
    ids: dict[str, list[Tensor]] = {name: [] for name in names}
    acts: dict[str, list[Tensor]] = {name: [] for name in names}
    was_training = cbm.training
    cbm.eval()
    try:
        steps = range(0, len(tokens), batch_size)
        for start in tqdm(steps, desc="recording codes", disable=None if progress else True):
            batch = tokens[start : start + batch_size].to(device)
            with cbm.observe(names, inputs=activations, device="cpu") as seen:
                cbm(input_ids=batch, use_cache=False)
            for name in names:
                ids[name].append(seen.ids[name].to(torch.int32))
                if activations:
                    acts[name].append(seen.inputs[name].float())
    finally:
        cbm.train(was_training)
    return CodeRecord(
        tokens=tokens.cpu(),
        ids={name: torch.cat(parts) for name, parts in ids.items()},
        activations={name: torch.cat(parts) for name, parts in acts.items() if parts},
    )
