"""Reading and steering codes: capture, force and ablate, as composable context managers.

All of them work around ``forward`` and ``generate`` alike. Positions are absolute indices in the
sequence (prompt and generated tokens together), also when ``generate`` uses a KV cache and each
step sees only the newest token. Forcing and plain ablation rewrite the ids in a codebook's
``hook_codes``; the layer then computes its output from the rewritten ids. Ablation with
``mode="next_best"`` instead keeps the codes out of the search, so the next-best codes fill
their slots.

Interventions stack: entered one after another they act in that order, and leaving a context
removes exactly its own effect. ``next_best`` ablations are the exception to the order: they act
in the search, so before any rewrite of ids, whenever they were entered.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import Tensor

from codebook_features.errors import CodebookError

if TYPE_CHECKING:
    from codebook_features.model import CodebookModel

Positions = Literal["all", "new"] | Sequence[int]
"""``all`` tokens, only ``new`` ones (after the prompt: the tokens of the first forward pass in
the context), or a list of absolute positions."""
Codes = int | Sequence[int] | Mapping[int, int | Sequence[int]]
"""A code, a list of codes, or a mapping from group (head) to its code(s)."""

FORCE_MODES = ("least", "all", "add")
ABLATE_MODES = ("remove", "next_best")


class CodeCapture:
    """Records the code ids of chosen sites for every forward pass while active.

    ``capture[site]`` is ``(batch, seq, groups, slots)``: the calls of that site joined along the
    sequence, so during cached generation it covers prompt and generated tokens in order.
    Calls with fewer slots than others are padded with ``-1``.
    """

    def __init__(self, model: CodebookModel, sites: list[str]) -> None:
        self.model = model
        self.calls: dict[str, list[Tensor]] = {site: [] for site in sites}
        self._handles: list[Any] = []

    def __enter__(self) -> CodeCapture:
        for site in self.calls:
            self._handles.append(
                self.model.codebook(site).register_forward_hook(
                    lambda m, args, out, site=site: self.calls[site].append(out.codes.detach())
                )
            )
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def __getitem__(self, site: str) -> Tensor:
        if site not in self.calls:
            raise CodebookError(f"site {site!r} was not captured; captured: {list(self.calls)}")
        calls = self.calls[site]
        if not calls:
            raise CodebookError(f"no forward pass reached {site} while capturing")
        slots = max(c.shape[-1] for c in calls)
        padded = [torch.nn.functional.pad(c, (0, slots - c.shape[-1]), value=-1) for c in calls]
        return torch.cat(padded, dim=-3)

    def keys(self) -> list[str]:
        return list(self.calls)


class _SiteIntervention:
    """Shared parts: the site, the groups' codes, and which tokens are affected."""

    def __init__(
        self,
        model: CodebookModel,
        site: str,
        codes: Codes,
        groups: Sequence[int] | None,
        positions: Positions,
    ) -> None:
        self.model = model
        self.site = site
        self.codebook = model.codebook(site)
        config = self.codebook.config
        self.codes = _codes_by_group(codes, groups, config.groups, config.num_codes, site)
        self.positions = _check_positions(positions)
        self._prompt_end: int | None = None
        self._handle: Any = None

    def _start(self) -> None:
        self._prompt_end = None  # "new" is relative to the first forward pass of this entry

    def token_mask(self, length: int, device: torch.device) -> Tensor | None:
        """Which of the current call's ``length`` tokens are affected (``None``: all)."""
        if self.positions == "all":
            return None
        absolute = self.model.positions(length, device)
        if self.positions == "new":
            if self._prompt_end is None:
                self._prompt_end = int(absolute[-1]) + 1 if length else 0
            return absolute >= self._prompt_end
        wanted = torch.as_tensor(list(self.positions), device=device)
        return torch.isin(absolute, wanted)

    def _region(self, ids: Tensor) -> Tensor:
        """``(..., T, G)`` bool: the (token, group) cells this intervention touches."""
        length, groups = ids.shape[-3], ids.shape[-2]
        group_mask = torch.zeros(groups, dtype=torch.bool, device=ids.device)
        group_mask[list(self.codes)] = True
        tokens = self.token_mask(length, ids.device)
        if tokens is None:
            tokens = torch.ones(length, dtype=torch.bool, device=ids.device)
        return tokens[:, None] & group_mask[None, :]

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class ForceCodes(_SiteIntervention):
    """Force codes at a site.

    Modes: ``least`` puts the given codes into the least similar slots (the first code into the
    last slot, the next into the one before, ...), ``all`` fills every slot with the codes
    (repeated as needed: one code means k copies), ``add`` appends them as extra slots.
    """

    def __init__(
        self,
        model: CodebookModel,
        site: str,
        codes: Codes,
        *,
        groups: Sequence[int] | None = None,
        positions: Positions = "all",
        mode: str = "least",
    ) -> None:
        super().__init__(model, site, codes, groups, positions)
        if mode not in FORCE_MODES:
            raise CodebookError(
                f"unknown force mode {mode!r}: choose from {', '.join(FORCE_MODES)}"
            )
        k = self.codebook.config.k
        if mode in ("least", "all") and max(len(c) for c in self.codes.values()) > k:
            raise CodebookError(
                f"mode {mode!r} puts each code in its own slot, but {site} has only k={k} "
                "slots: force fewer codes, or use mode 'add'"
            )
        self.mode = mode

    def __enter__(self) -> ForceCodes:
        self._start()
        self._handle = self.codebook.hook_codes.register_forward_hook(
            lambda module, args, ids: self.rewrite(ids)
        )
        return self

    def rewrite(self, ids: Tensor) -> Tensor:
        groups, slots = ids.shape[-2], ids.shape[-1]
        region = self._region(ids)[..., None]  # (T, G, 1)
        if self.mode == "add":
            extra = max(len(c) for c in self.codes.values())
            table = torch.full((groups, extra), -1, dtype=ids.dtype, device=ids.device)
            for g, codes in self.codes.items():
                table[g, : len(codes)] = torch.as_tensor(codes)
            added = torch.where(region, table, torch.full_like(table, -1))
            return torch.cat([ids, added.expand(*ids.shape[:-1], extra)], dim=-1)
        table = torch.full((groups, slots), -1, dtype=ids.dtype, device=ids.device)
        for g, codes in self.codes.items():
            if self.mode == "all":
                table[g] = torch.as_tensor(list(itertools.islice(itertools.cycle(codes), slots)))
            else:
                for i, code in enumerate(codes):
                    table[g, slots - 1 - i] = code
        return torch.where(region & (table >= 0), table, ids)


class AblateCodes(_SiteIntervention):
    """Ablate codes at a site: ``remove`` empties their slots (their share of the output is
    gone), ``next_best`` keeps them out of the search so the next-best codes take their slots."""

    def __init__(
        self,
        model: CodebookModel,
        site: str,
        codes: Codes,
        *,
        groups: Sequence[int] | None = None,
        positions: Positions = "all",
        mode: str = "remove",
    ) -> None:
        super().__init__(model, site, codes, groups, positions)
        if mode not in ABLATE_MODES:
            raise CodebookError(
                f"unknown ablation mode {mode!r}: choose from {', '.join(ABLATE_MODES)}"
            )
        config = self.codebook.config
        if mode == "next_best" and max(len(c) for c in self.codes.values()) > (
            config.num_codes - config.k
        ):
            raise CodebookError(f"ablating that many codes leaves fewer than k codes at {site}")
        self.mode = mode
        self.banned = torch.zeros(config.groups, config.num_codes, dtype=torch.bool)
        for g, codes in self.codes.items():
            self.banned[g, codes] = True

    def __enter__(self) -> AblateCodes:
        self._start()
        if self.mode == "remove":
            self._handle = self.codebook.hook_codes.register_forward_hook(
                lambda module, args, ids: self.rewrite(ids)
            )
        else:
            self._handle = self.codebook.register_exclusion(self.exclusion)
        return self

    def rewrite(self, ids: Tensor) -> Tensor:
        banned = self.banned.to(ids.device)
        groups = torch.arange(ids.shape[-2], device=ids.device)[:, None]
        hit = banned[groups, ids.clamp_min(0)] & (ids >= 0)
        return torch.where(self._region(ids)[..., None] & hit, torch.full_like(ids, -1), ids)

    def exclusion(self, lead: torch.Size) -> tuple[Tensor, Tensor | None]:
        tokens = self.token_mask(lead[-1], self.banned.device) if len(lead) else None
        where = None if tokens is None else tokens.expand(*lead)
        return self.banned, where


def _codes_by_group(
    codes: Codes, groups: Sequence[int] | None, num_groups: int, num_codes: int, site: str
) -> dict[int, list[int]]:
    if isinstance(codes, Mapping):
        if groups is not None:
            raise CodebookError("give groups either in the codes mapping or as groups=, not both")
        table = {int(g): _as_list(c) for g, c in codes.items()}
    else:
        chosen = range(num_groups) if groups is None else groups
        table = {int(g): _as_list(codes) for g in chosen}
    if not table:
        raise CodebookError(f"no groups chosen at {site}")
    for g, listed in table.items():
        if not 0 <= g < num_groups:
            raise CodebookError(
                f"group (head) {g} is out of range at {site}, which has {num_groups} groups"
            )
        if not listed:
            raise CodebookError(f"no codes given for group {g} at {site}")
        for code in listed:
            if not 0 <= code < num_codes:
                raise CodebookError(
                    f"code {code} is out of range at {site}, which has {num_codes} codes "
                    f"(0..{num_codes - 1})"
                )
    return table


def _as_list(codes: int | Sequence[int]) -> list[int]:
    if isinstance(codes, numbers.Integral) or (isinstance(codes, Tensor) and codes.ndim == 0):
        return [int(codes)]
    return [int(c) for c in codes]


def _check_positions(positions: Positions) -> Positions:
    if isinstance(positions, str) and positions in ("all", "new"):
        return positions
    if not isinstance(positions, str):
        positions = list(positions)  # a generator would be used up by the check below
    if isinstance(positions, str) or not all(
        isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in positions
    ):
        raise CodebookError(
            "positions must be 'all', 'new' or a list of absolute positions >= 0, "
            f"got {positions!r}"
        )
    return list(positions)
