"""Applying intervention specs to a model: composable context managers over its code hooks.

They work around ``forward`` and ``generate`` alike. Positions are absolute indices in the
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
from collections.abc import Iterable
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from codebook_features.attach.interventions.spec import (
    Ablate,
    Force,
    Intervention,
    Positions,
    check_positions,
)
from codebook_features.errors import CodebookError

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel


class TokenSelection:
    """Which tokens of each forward pass a :data:`Positions` value means for one model, shared
    by everything that acts on some tokens only (specs here, activation addition in
    ``steering``). ``new`` is relative to the first forward pass after :meth:`start`."""

    def __init__(self, model: CodebookModel, positions: Positions) -> None:
        self.model = model
        self.positions = check_positions(positions)
        self._prompt_end: int | None = None

    def start(self) -> None:
        """Begin a new entry: the next forward pass is the prompt of ``new``."""
        self._prompt_end = None

    def mask(self, length: int, device: torch.device) -> Tensor | None:
        """Which of the current call's ``length`` tokens are meant (``None``: all)."""
        if self.positions == "all":
            return None
        absolute = self.model.positions(length, device)
        if self.positions == "new":
            if self._prompt_end is None:
                self._prompt_end = int(absolute[-1]) + 1 if length else 0
            return absolute >= self._prompt_end
        wanted = torch.as_tensor(list(self.positions), device=device)
        return torch.isin(absolute, wanted)


class _Applied:
    """One spec applied to one model: the codebook, its groups' codes, and which tokens."""

    def __init__(self, model: CodebookModel, spec: Intervention) -> None:
        spec.check(model)
        self.model = model
        self.spec = spec
        self.site = spec.site
        self.codebook = model.codebook(spec.site)
        self.positions = spec.positions
        self.where = TokenSelection(model, spec.positions)
        self._handle: Any = None

    def _start(self) -> None:
        self.where.start()  # "new" is relative to the first forward pass of this entry

    def token_mask(self, length: int, device: torch.device) -> Tensor | None:
        """Which of the current call's ``length`` tokens are affected (``None``: all)."""
        return self.where.mask(length, device)

    def _tokens(self, ids: Tensor) -> Tensor:
        """``(T, 1)`` bool: the tokens of this call that the intervention touches."""
        length = ids.shape[-3]
        tokens = self.token_mask(length, ids.device)
        if tokens is None:
            tokens = torch.ones(length, dtype=torch.bool, device=ids.device)
        return tokens[:, None]

    def __exit__(self, *exc: object) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None


class ForceCodes(_Applied):
    """A :class:`~codebook_features.attach.interventions.spec.Force` spec, applied while entered."""

    spec: Force

    def __init__(self, model: CodebookModel, spec: Force) -> None:
        super().__init__(model, spec)
        rows = spec.rows if spec.rows is not None else [spec.codes]
        self.mode = spec.mode
        self._tables = [self.spec.by_group(model, row) for row in rows]
        self._cache: dict[tuple[torch.device, int], Tensor] = {}

    def __enter__(self) -> ForceCodes:
        self._start()
        self._handle = self.codebook.hook_codes.register_forward_hook(
            lambda module, args, ids: self.rewrite(ids)
        )
        return self

    def _table(self, slots: int, device: torch.device) -> Tensor:
        """``(rows, G, S)`` ids to write, ``-1`` where the ids stay: ``S`` is the number of
        extra slots in mode ``add``, else the number of slots."""
        key = (device, slots)
        if key not in self._cache:
            groups = self.codebook.config.groups
            width = (
                max((len(c) for t in self._tables for c in t.values()), default=1)
                if self.mode == "add"
                else slots
            )
            table = torch.full((len(self._tables), groups, width), -1, dtype=torch.long)
            for r, by_group in enumerate(self._tables):
                for g, codes in by_group.items():
                    if self.mode == "all":
                        table[r, g] = torch.as_tensor(
                            list(itertools.islice(itertools.cycle(codes), width))
                        )
                    elif self.mode == "least":
                        for i, code in enumerate(codes):
                            table[r, g, width - 1 - i] = code
                    else:
                        table[r, g, : len(codes)] = torch.as_tensor(codes)
            self._cache[key] = table.to(device)
        return self._cache[key]

    def rewrite(self, ids: Tensor) -> Tensor:
        table = self._table(ids.shape[-1], ids.device).to(ids.dtype)  # (R, G, S)
        table = self._per_row(table, ids) if self.spec.rows is not None else table[0]
        tokens = self._tokens(ids)[..., None]  # (T, 1, 1)
        if self.mode == "add":
            added = torch.where(tokens & (table >= 0).unsqueeze(-3), table.unsqueeze(-3), -1)
            shape = (*ids.shape[:-1], table.shape[-1])
            return torch.cat([ids, added.expand(shape)], dim=-1)
        table = table.unsqueeze(-3)  # (..., 1, G, S): broadcast over tokens
        return torch.where(tokens & (table >= 0), table, ids)

    def _per_row(self, table: Tensor, ids: Tensor) -> Tensor:
        """The rows' tables for a batch of ids ``(B, T, G, S)``: ``(B, G, S)``."""
        rows, batch = table.shape[0], ids.shape[0] if ids.ndim == 4 else -1
        if batch < 0 or batch % rows:
            raise CodebookError(
                f"force at {self.site} has codes for {rows} rows, but the batch has "
                f"{'no batch dimension' if batch < 0 else f'{batch} rows'}: give a batch of "
                "the same rows (or each row repeated the same number of times, consecutively)"
            )
        return table.repeat_interleave(batch // rows, dim=0)


class AblateCodes(_Applied):
    """An :class:`~codebook_features.attach.interventions.spec.Ablate` spec, applied while
    entered."""

    spec: Ablate

    def __init__(self, model: CodebookModel, spec: Ablate) -> None:
        super().__init__(model, spec)
        self.mode = spec.mode
        config = self.codebook.config
        self.groups = spec.by_group(model)
        self.banned = torch.zeros(config.groups, config.num_codes, dtype=torch.bool)
        for g, codes in self.groups.items():
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
        region = self._tokens(ids)[..., None]  # (T, 1, 1)
        return torch.where(region & hit, torch.full_like(ids, -1), ids)

    def exclusion(self, lead: torch.Size) -> tuple[Tensor, Tensor | None]:
        tokens = self.token_mask(lead[-1], self.banned.device) if len(lead) else None
        where = None if tokens is None else tokens.expand(*lead)
        return self.banned, where


def applied(model: CodebookModel, spec: Intervention) -> ForceCodes | AblateCodes:
    """The context manager that applies ``spec`` to ``model`` (checked against it first)."""
    if isinstance(spec, Force):
        return ForceCodes(model, spec)
    if isinstance(spec, Ablate):
        return AblateCodes(model, spec)
    raise CodebookError(f"not an intervention spec: {spec!r} (use Force or Ablate)")


class Interventions:
    """Several specs applied together, in order, as one context manager.

    Every spec is checked against the model before any is applied, so a bad one changes
    nothing.
    """

    def __init__(self, model: CodebookModel, specs: Iterable[Intervention]) -> None:
        self.specs: tuple[Intervention, ...] = (
            (specs,) if isinstance(specs, (Force, Ablate)) else tuple(specs)
        )
        self._parts = [applied(model, spec) for spec in self.specs]
        self._stack: ExitStack | None = None

    def __enter__(self) -> Interventions:
        stack = ExitStack()
        try:
            for part in self._parts:
                stack.enter_context(part)
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
