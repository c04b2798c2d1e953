"""One way to see what the codebooks do: their inputs, code ids and outputs at chosen sites.

An :class:`Observation` is handed every call of the sites it watches by the model's own site
hooks, the same place where the codebooks run, so what it records is exactly what the codebooks
received and computed (after any intervention rewrote the ids). It works for single forward
passes and for ``generate``: the calls of a site are joined along the sequence, so during cached
generation they cover the prompt and the generated tokens in order. Like TransformerLens'
``run_with_cache`` it takes a filter of names, and records nothing else.

A disabled site still shows its input (the activation its codebook would receive), which is what
k-means initialisation and the neuron baselines need; it has no ids or output then.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from codebook_features.errors import CodebookError

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel

Part = Literal["inputs", "ids", "outputs"]
PARTS: tuple[Part, ...] = ("inputs", "ids", "outputs")


class Observation:
    """Records, while active, the chosen parts of every call of the chosen sites.

    ``observation.ids[site]`` is ``(batch, seq, groups, slots)`` (``-1``: empty slot; calls with
    fewer slots are padded), ``observation.inputs[site]`` and ``observation.outputs[site]`` are
    ``(batch, seq, width)``. ``observation[site]`` is short for ``observation.ids[site]``.
    :meth:`calls` gives the calls one by one, for passes that cannot be joined (batches of
    different sizes).
    """

    def __init__(
        self,
        model: CodebookModel,
        sites: Sequence[str],
        *,
        ids: bool = True,
        inputs: bool = False,
        outputs: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self.sites = list(sites)
        self.parts = tuple(p for p, on in zip(PARTS, (inputs, ids, outputs), strict=True) if on)
        if not self.parts:
            raise CodebookError("an observation needs at least one of ids, inputs or outputs")
        self.device = device
        self._calls: dict[str, dict[Part, list[Tensor]]] = {
            site: {part: [] for part in self.parts} for site in self.sites
        }

    def __enter__(self) -> Observation:
        self.model.add_observer(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.model.remove_observer(self)

    def record(self, site: str, **parts: Tensor | None) -> None:
        """Keep the parts of one call of ``site`` that this observation asked for."""
        calls = self._calls.get(site)
        if calls is None:
            return
        for part in self.parts:
            value = parts.get(part)
            if value is not None:
                value = value.detach()
                calls[part].append(value if self.device is None else value.to(self.device))

    def calls(self, part: Part, site: str) -> list[Tensor]:
        """Every recorded call of ``site``, in order, as it came."""
        if part not in PARTS:
            raise CodebookError(f"unknown part {part!r}: choose from {', '.join(PARTS)}")
        if site not in self._calls:
            raise CodebookError(f"site {site!r} was not observed; observed: {self.sites}")
        if part not in self.parts:
            raise CodebookError(f"{part} were not recorded: observe with {part}=True")
        return self._calls[site][part]

    def joined(self, part: Part, site: str) -> Tensor:
        """The calls of ``site`` joined along the sequence (dimension 1)."""
        calls = self.calls(part, site)
        if not calls:
            why = "no forward pass reached it" + (
                ", or its codebook was disabled" if part != "inputs" else ""
            )
            raise CodebookError(f"no {part} were recorded at {site}: {why}")
        if part == "ids":
            slots = max(c.shape[-1] for c in calls)
            calls = [torch.nn.functional.pad(c, (0, slots - c.shape[-1]), value=-1) for c in calls]
        return torch.cat(calls, dim=1) if calls[0].ndim > 2 else torch.cat(calls, dim=0)

    @property
    def ids(self) -> _PartView:
        return _PartView(self, "ids")

    @property
    def inputs(self) -> _PartView:
        return _PartView(self, "inputs")

    @property
    def outputs(self) -> _PartView:
        return _PartView(self, "outputs")

    def __getitem__(self, site: str) -> Tensor:
        return self.joined("ids", site)

    def keys(self) -> list[str]:
        return list(self.sites)

    def clear(self) -> None:
        """Forget what was recorded (to reuse the observation for the next batch)."""
        for calls in self._calls.values():
            for parts in calls.values():
                parts.clear()


class _PartView:
    """``observation.ids[site]``: one part of every site, joined on access."""

    def __init__(self, observation: Observation, part: Part) -> None:
        self._observation, self._part = observation, part

    def __getitem__(self, site: str) -> Tensor:
        return self._observation.joined(self._part, site)

    def __contains__(self, site: object) -> bool:
        return site in self._observation.sites

    def keys(self) -> list[str]:
        return self._observation.keys()

    def items(self) -> list[tuple[str, Tensor]]:
        return [(site, self[site]) for site in self.keys()]
