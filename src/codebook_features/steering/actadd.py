"""Activation addition: steering by adding a fixed vector at one site, the standard baseline
that steering with codes is compared with.

The vector is the mean activation over the tokens of texts with a concept minus the mean over
texts without it (:func:`steering_vector`), taken where the rest of the network reads the site:
the codebook's output when the site's codebook is enabled, the site's plain activation (the
codebook's input) when it is disabled. :class:`AddActivation` adds ``alpha`` times the vector to
that same activation, at the generated tokens (``new``) or at every token (``all``), in single
forward passes and in cached generation alike.

Where it acts: with the codebook enabled, a forward hook on the :class:`Codebook` module changes
its output, so observers (which record after the codebook ran) see the steered output; with it
disabled, a hook on the site's module placed before the model's own site hook changes the
activation the (bypassed) codebook would receive, so observers see it in ``inputs``. Either way
exactly one of the two acts in a forward pass, and the model's code is left as it is.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from codebook_features.attach.interventions.apply import TokenSelection
from codebook_features.attach.interventions.spec import Positions
from codebook_features.errors import CodebookError
from codebook_features.steering.batches import check_batch_size, padded_batches, windows

if TYPE_CHECKING:
    from codebook_features.attach.model import CodebookModel


@torch.no_grad()
def activation_sums(
    cbm: CodebookModel,
    tokenizer: Any,
    sites: Sequence[str],
    texts: Sequence[str],
    *,
    batch_size: int = 8,
) -> tuple[dict[str, Tensor], Tensor]:
    """``(sums, tokens)``: per site, each text's sum over its tokens of the activation the
    network reads there (codebook output if enabled, else its input), a float64 CPU tensor
    ``(texts, width)``, and each text's number of tokens; all from one pass over the texts.
    Sums of any set of the texts give their mean activation without running them again.

    Texts are tokenized without special tokens, as a code store records them; a text longer
    than the model's context is cut into consecutive windows, so every token counts."""
    from codebook_features.store.model_loading import context_length

    widths = {site: cbm.codebook(site).config.dim for site in sites}  # refuses unknown sites
    if isinstance(texts, str) or not texts:
        raise CodebookError("give a list of texts (at least one), not a single string")
    check_batch_size(batch_size)
    context = context_length(cbm.model.config)
    pieces: list[list[int]] = []
    owners: list[int] = []
    for index, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        if not ids:
            raise CodebookError(f"the text {text!r} has no tokens")
        found = windows(ids, context)
        pieces += found
        owners += [index] * len(found)
    parts = {site: "outputs" if site in cbm.enabled else "inputs" for site in widths}
    watch = {part: part in parts.values() for part in ("inputs", "outputs")}
    device = next(cbm.parameters()).device
    sums = {site: torch.zeros(len(texts), w, dtype=torch.float64) for site, w in widths.items()}
    tokens = torch.zeros(len(texts), dtype=torch.float64)
    for ids, mask, rows in padded_batches(pieces, batch_size, device):
        owner = torch.tensor([owners[i] for i in rows])
        real = mask.bool()[:, :, None]
        with cbm.observe(list(widths), ids=False, **watch) as seen:
            cbm(input_ids=ids, attention_mask=mask, use_cache=False)
        for site, width in widths.items():
            acts = seen.joined(parts[site], site).reshape(*ids.shape, width).double()
            kept = torch.where(real, acts, torch.zeros((), dtype=acts.dtype, device=acts.device))
            sums[site].index_add_(0, owner, kept.sum(1).cpu())  # padding adds nothing
        tokens.index_add_(0, owner, mask.sum(1).double().cpu())
    return sums, tokens


def mean_activations(
    cbm: CodebookModel,
    tokenizer: Any,
    sites: Sequence[str],
    texts: Sequence[str],
    *,
    batch_size: int = 8,
) -> dict[str, Tensor]:
    """Per site, the mean over every token of ``texts`` of the activation the network reads
    there: float32 CPU vectors (see :func:`activation_sums`)."""
    sums, tokens = activation_sums(cbm, tokenizer, sites, texts, batch_size=batch_size)
    return {site: (total.sum(0) / tokens.sum()).float() for site, total in sums.items()}


def mean_activation(
    cbm: CodebookModel, tokenizer: Any, site: str, texts: Sequence[str], *, batch_size: int = 8
) -> Tensor:
    """The mean activation at one site (see :func:`mean_activations`)."""
    return mean_activations(cbm, tokenizer, [site], texts, batch_size=batch_size)[site]


def steering_vectors(
    cbm: CodebookModel,
    tokenizer: Any,
    sites: Sequence[str],
    concept_texts: Sequence[str],
    contrast_texts: Sequence[str],
    *,
    batch_size: int = 8,
) -> dict[str, Tensor]:
    """Per site, the mean activation over the tokens of ``concept_texts`` minus the mean over
    the tokens of ``contrast_texts`` (see :func:`mean_activations`): one pass per side."""
    concept = mean_activations(cbm, tokenizer, sites, concept_texts, batch_size=batch_size)
    contrast = mean_activations(cbm, tokenizer, sites, contrast_texts, batch_size=batch_size)
    return {site: concept[site] - contrast[site] for site in concept}


def steering_vector(
    cbm: CodebookModel,
    tokenizer: Any,
    site: str,
    concept_texts: Sequence[str],
    contrast_texts: Sequence[str],
    *,
    batch_size: int = 8,
) -> Tensor:
    """The steering vector of one site (see :func:`steering_vectors`)."""
    return steering_vectors(
        cbm, tokenizer, [site], concept_texts, contrast_texts, batch_size=batch_size
    )[site]


class AddActivation:
    """Context manager adding ``alpha * vector`` to the activation the network reads at
    ``site``, at positions ``new`` (tokens after the prompt), ``all``, or absolute ones.

    ``alpha = 0`` changes nothing at all (the hooks return the activation untouched). It can be
    entered again after leaving it (``new`` then starts over), and combined with interventions
    on codes.
    """

    def __init__(
        self,
        model: CodebookModel,
        site: str,
        vector: Tensor | Sequence[float],
        alpha: float = 1.0,
        positions: Positions = "new",
    ) -> None:
        self.model = model
        self.site = site
        self.codebook = model.codebook(site)  # refuses an unknown site
        width = self.codebook.config.dim
        vector = torch.as_tensor(vector).detach()
        if vector.shape != (width,) or not vector.is_floating_point():
            raise CodebookError(
                f"the vector for {site} must be {width} numbers (the site's width), got "
                f"shape {tuple(vector.shape)} of {vector.dtype}"
            )
        if not bool(vector.isfinite().all()):
            raise CodebookError(f"the vector for {site} holds NaN or inf")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real):
            raise CodebookError(f"alpha must be a number, got {alpha!r}")
        if not math.isfinite(alpha):
            raise CodebookError(f"alpha must be finite, got {alpha}")
        self.vector = vector.float().cpu()
        self.alpha = float(alpha)
        self.where = TokenSelection(model, positions)
        self.positions = self.where.positions
        self._added: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> AddActivation:
        if self._handles:
            raise CodebookError(f"activation addition at {self.site} is already active")
        self.where.start()
        location = self.model.sites[self.site]
        self._handles.append(self.codebook.register_forward_hook(self._after_codebook))
        if location.pre_hook:  # before the model's own pre-hook, which then sees the sum
            hook = location.module.register_forward_pre_hook(self._before_site, prepend=True)
        else:
            hook = location.module.register_forward_hook(self._after_site, prepend=True)
        self._handles.append(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def add(self, x: Tensor) -> Tensor:
        """``x`` (the site's activation in one forward pass) with the vector added at the
        chosen tokens."""
        if self.alpha == 0:
            return x
        lead = self.codebook.leading_shape(x)  # (..., T): the features may be split by group
        key = (x.device, x.dtype)
        if key not in self._added:
            self._added[key] = (self.alpha * self.vector).to(x.device, x.dtype)
        added = self._added[key].reshape(x.shape[len(lead) :])
        tokens = self.where.mask(lead[-1] if lead else 1, x.device)
        if tokens is None:
            return x + added
        tokens = tokens.view(-1, *([1] * added.ndim)) if lead else tokens[0]
        return torch.where(tokens, x + added, x)

    def _after_codebook(self, module: Any, args: tuple, out: Any) -> Any:
        return out._replace(output=self.add(out.output))

    def _before_site(self, module: Any, args: tuple) -> tuple | None:
        if self.site in self.model.enabled:
            return None  # the codebook runs: its hook adds
        return (self.model.over_tokens(args[0], self.add), *args[1:])

    def _after_site(self, module: Any, args: tuple, output: Any) -> Any:
        if self.site in self.model.enabled:
            return None
        return self.model.with_activation(output, lambda x: self.model.over_tokens(x, self.add))

    def to_dict(self) -> dict[str, Any]:
        """What it does, for reports (the vector itself only by its norm)."""
        return {
            "kind": "add_activation",
            "site": self.site,
            "alpha": self.alpha,
            "positions": (
                self.positions if isinstance(self.positions, str) else list(self.positions)
            ),
            "vector_norm": float(self.vector.norm()),
        }

    def __repr__(self) -> str:
        return (
            f"AddActivation(site={self.site!r}, alpha={self.alpha}, "
            f"positions={self.positions!r}, |vector|={float(self.vector.norm()):.4g})"
        )
