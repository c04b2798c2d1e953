"""A Hugging Face causal LM with codebooks attached at named sites.

The HF model stays an HF model: codebooks live beside it (``CodebookModel.codebooks``) and act
through hooks on its modules, so ``generate()``, ``save_pretrained()`` and device or dtype moves
keep working, and with every codebook disabled the model computes exactly what it did before.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from codebook_features._version import __version__
from codebook_features.attach.config import CodebookModelConfig
from codebook_features.attach.interventions import (
    Ablate,
    AblateCodes,
    Codes,
    Force,
    ForceCodes,
    Intervention,
    Interventions,
    Positions,
)
from codebook_features.attach.observation import Observation
from codebook_features.attach.site_checks import check_sites
from codebook_features.attach.site_names import describe_sites, match_sites
from codebook_features.attach.sites import SiteLocation, resolve_sites
from codebook_features.attach.token_positions import TokenPositions
from codebook_features.codebook import Codebook
from codebook_features.errors import CodebookError
from codebook_features.persist.checksums import directory_checksums
from codebook_features.persist.files import (
    CODEBOOK_CONFIG,
    CODEBOOK_WEIGHTS,
    atomic_directory,
    write_json,
)
from codebook_features.persist.model_files import HUB_OPTIONS, fetch, read_description, verify_files
from codebook_features.persist.ownership import SAVED_MODEL, check_output_dir
from codebook_features.settings.base import VERSION_KEY

SiteSpec = str | Sequence[str] | None
"""Sites by full name (``layers.3.attn_heads``), by kind (``attn_heads``: every layer) or by
glob (``layers.*.mlp``, ``layers.1[0-5].mlp``); ``None`` means all sites."""


class CodebookModel(nn.Module):
    """An HF causal LM plus codebooks at the sites its configuration names.

    ``forward`` and ``generate`` are the model's own; each codebook's loss of the latest
    forward pass is in :meth:`codebook_losses`, their sum in :meth:`codebook_loss`.
    """

    def __init__(self, model: nn.Module, config: CodebookModelConfig) -> None:
        super().__init__()
        self.model = model
        self.codebook_config = config
        locations, plan = resolve_sites(model, config.sites, config.layers)
        facts = check_sites(model, locations, plan.blocks, plan.family)
        widths = facts.widths
        # sites whose tensor the model changes in place: their hooks hand over copies
        self._changed_in_place = facts.changed_in_place
        param = next(model.parameters())  # dtype, and device for sites without parameters
        self.codebooks = nn.ModuleDict()
        self.sites: dict[str, SiteLocation] = {}
        for site in locations:
            if str(site.layer) not in self.codebooks:
                self.codebooks[str(site.layer)] = nn.ModuleDict()
            layer = self.codebooks[str(site.layer)]
            heads = facts.heads.get(site.name, 1)
            cb_config = config.site_config(site.kind, widths[site.name], heads)
            device = next(site.module.parameters(), param).device  # models split over devices
            layer[site.kind] = Codebook(cb_config, device=device, dtype=param.dtype)
            self.sites[site.name] = site
        self.enabled: set[str] = set(self.sites)
        self._observers: list[Observation] = []
        self._losses: dict[str, Tensor] = {}
        self._tokens = TokenPositions()
        # Hooks are partials of bound methods (not closures), so a deep copy of this object
        # gets hooks that call the copy.
        self._handles = [
            model.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            model.register_forward_hook(self._after_forward, with_kwargs=True),
        ]
        for site in locations:
            if site.pre_hook:
                hook = functools.partial(self._site_pre_hook, site.name)
                self._handles.append(site.module.register_forward_pre_hook(hook))
            else:
                hook = functools.partial(self._site_post_hook, site.name)
                self._handles.append(site.module.register_forward_hook(hook))

    def __getstate__(self) -> dict[str, Any]:
        # the latest losses carry autograd history, which cannot be copied or pickled
        return {**super().__getstate__(), "_losses": {}, "_observers": []}

    def detach(self) -> nn.Module:
        """Remove every hook and return the plain model (codebooks no longer apply)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return self.model

    # ------------------------------------------------------------------ running the model
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        return self.model.generate(*args, **kwargs)

    def get_input_embeddings(self) -> nn.Module:
        """The wrapped model's token embedding, as on a Hugging Face model (its
        ``num_embeddings`` is the vocabulary the model reads)."""
        return self.model.get_input_embeddings()

    def codebook(self, site: str) -> Codebook:
        """The codebook at a site named like ``layers.3.attn_heads``."""
        self._check_site(site)
        location = self.sites[site]
        return self.codebooks[str(location.layer)][location.kind]

    def codebook_losses(self) -> dict[str, Tensor]:
        """Each enabled codebook's loss from the latest forward pass."""
        return dict(self._losses)

    def codebook_loss(self) -> Tensor:
        """The sum of :meth:`codebook_losses` (zero when no codebook ran)."""
        if not self._losses:
            return torch.zeros((), device=next(self.model.parameters()).device)
        return torch.stack(list(self._losses.values())).sum()

    def positions(self, length: int, device: torch.device) -> Tensor:
        """Absolute positions of the tokens the current forward pass is processing: with a KV
        cache during generation, the new tokens come after the cached ones."""
        return self._tokens.positions(length, device)

    def _before_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        self._losses = {}
        self._tokens.start(args, kwargs)

    def _after_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        self._tokens.finish(kwargs, output)

    def over_tokens(self, x: Tensor, change: Callable[[Tensor], Tensor | None]) -> Tensor | None:
        """``change`` applied to a site's activation as ``(batch, seq, features)``, its result
        shaped back: modules that work on flattened tokens (``(batch * seq, features)``, as
        OPT's MLP does) are seen unflattened, so positions mean the same at every site."""
        tokens = self._tokens.unflatten(x)
        if tokens is None:
            return change(x)
        new = change(tokens)
        return None if new is None else new.reshape(x.shape)

    @staticmethod
    def with_activation(output: Any, change: Callable[[Tensor], Tensor | None]) -> Any:
        """A module's output with its activation (the tensor, or the first item of a tuple or
        list, as openai-gpt's modules return) replaced by ``change``'s (``None``: unchanged)."""
        if isinstance(output, (tuple, list)):
            new = change(output[0])
            return None if new is None else type(output)([new, *output[1:]])
        return change(output)

    def _run(self, name: str, x: Tensor) -> Tensor | None:
        """The site's new activation (``None``: unchanged), told to every observer."""
        return self.over_tokens(x, lambda tokens: self._run_tokens(name, tokens))

    def _run_tokens(self, name: str, x: Tensor) -> Tensor | None:
        changed = name in self._changed_in_place
        if name not in self.enabled:
            seen = x.clone() if changed and self._observers else x  # the model changes x later
            for observer in self._observers:
                observer.record(name, inputs=seen)
            return None
        site = self.sites[name]
        out = self.codebooks[str(site.layer)][site.kind](x)
        previous = self._losses.get(name)
        self._losses[name] = out.loss if previous is None else previous + out.loss
        for observer in self._observers:
            observer.record(name, inputs=x, ids=out.ids, outputs=out.output)
        # a codebook's output is a view made by an autograd function: one the model changes
        # in place must be a tensor of its own
        return out.output.clone() if changed else out.output

    def _site_pre_hook(self, name: str, module: nn.Module, args: tuple) -> tuple | None:
        new = self._run(name, args[0])
        return None if new is None else (new, *args[1:])

    def _site_post_hook(self, name: str, module: nn.Module, args: tuple, output: Any) -> Any:
        return self.with_activation(output, lambda x: self._run(name, x))

    # ------------------------------------------------------------------ observing
    def observe(
        self,
        sites: SiteSpec = None,
        *,
        ids: bool = True,
        inputs: bool = False,
        outputs: bool = False,
        device: torch.device | str | None = None,
    ) -> Observation:
        """Context manager recording, at some sites (all by default), the code ids and
        optionally the codebooks' inputs and outputs of every forward pass or generation step
        run inside it; see :class:`~codebook_features.attach.observation.Observation`. ``device``
        moves what is recorded there (e.g. ``"cpu"``) as it comes."""
        return Observation(
            self, self.select_sites(sites), ids=ids, inputs=inputs, outputs=outputs, device=device
        )

    def run_with_codes(
        self,
        *args: Any,
        sites: SiteSpec = None,
        inputs: bool = False,
        outputs: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, Observation]:
        """Run the model once; returns its output and an observation of ``sites``."""
        with self.observe(sites, inputs=inputs, outputs=outputs) as seen:
            out = self.model(*args, **kwargs)
        return out, seen

    def capture(self, sites: SiteSpec = None) -> Observation:
        """Context manager recording the code ids of some sites (all by default):
        ``capture[site]`` is ``(batch, seq, groups, slots)``."""
        return self.observe(sites)

    def add_observer(self, observer: Observation) -> None:
        self._observers.append(observer)

    def remove_observer(self, observer: Observation) -> None:
        self._observers = [o for o in self._observers if o is not observer]

    @torch.no_grad()
    def init_kmeans(
        self, batches: Iterable[Tensor], iters: int = 20, seed: int = 0, **forward_kwargs: Any
    ) -> None:
        """Initialise every codebook with k-means on the model's activations at its site.

        ``batches`` are token-id tensors run through the model with all codebooks bypassed,
        as the original method does. Under data-parallel training rank 0's result is used.
        """
        with self.disabled(), self.observe(ids=False, inputs=True) as seen:
            for batch in batches:
                self.model(input_ids=batch, use_cache=False, **forward_kwargs)
        for name in self.sites:
            parts = seen.calls("inputs", name)
            samples = torch.cat([p.reshape(-1, p.shape[-1]) for p in parts])
            self.codebook(name).init_kmeans(samples, iters=iters, seed=seed)

    # ------------------------------------------------------------------ enabling sites
    def select_sites(self, sites: SiteSpec = None) -> list[str]:
        """Resolve a :data:`SiteSpec` to site names in natural order; a name or glob that
        matches no site is refused with the list of sites there are."""
        if sites is None:
            return list(self.sites)
        return match_sites(sites, list(self.sites))

    def enable(self, sites: SiteSpec = None) -> None:
        self.enabled |= set(self.select_sites(sites))

    def disable(self, sites: SiteSpec = None) -> None:
        self.enabled -= set(self.select_sites(sites))

    @contextmanager
    def disabled(self, sites: SiteSpec = None) -> Iterator[None]:
        """Run without some codebooks (all by default): disabled means the plain model."""
        before = set(self.enabled)
        self.disable(sites)
        try:
            yield
        finally:
            self.enabled = before

    def _check_site(self, site: str) -> None:
        if site not in self.sites:
            raise CodebookError(
                f"no codebook at site {site!r}; this model has: {describe_sites(self.sites)}"
            )

    # ------------------------------------------------------------------ interventions
    def intervene(self, specs: Intervention | Sequence[Intervention]) -> Interventions:
        """Context manager applying intervention specs (:class:`Force`, :class:`Ablate`) in
        order; each is checked against this model before any is applied."""
        return Interventions(self, specs)

    def force_codes(
        self,
        site: str,
        codes: Codes,
        *,
        groups: Sequence[int] | None = None,
        positions: Positions = "all",
        mode: str = "least",
    ) -> ForceCodes:
        """Context manager forcing codes at a site: ``codes`` is an id, a list of ids (for every
        group, or for ``groups``) or a mapping group -> id(s); see
        :class:`~codebook_features.attach.interventions.Force` for the modes."""
        return ForceCodes(self, Force(site, codes, groups=groups, positions=positions, mode=mode))

    def ablate_codes(
        self,
        site: str,
        codes: Codes,
        *,
        groups: Sequence[int] | None = None,
        positions: Positions = "all",
        mode: str = "remove",
    ) -> AblateCodes:
        """Context manager ablating codes at a site (``remove`` or ``next_best``); see
        :class:`~codebook_features.attach.interventions.Ablate`."""
        return AblateCodes(self, Ablate(site, codes, groups=groups, positions=positions, mode=mode))

    # ------------------------------------------------------------------ saving and loading
    def save(self, directory: str | os.PathLike, tokenizer: Any = None) -> None:
        """Write the base model (``save_pretrained``), the codebooks (safetensors) and their
        configuration (JSON, with the library version). Everything is written beside the target
        and then swapped in, so a failed save leaves the previous one in place (a crash during
        the swap itself leaves it under a hidden ``.<name>.old-*`` name). An existing directory
        that is not a saved model, or that holds files the model did not save, is refused, so
        nothing is lost. The sha256 of every file is
        recorded in ``codebook_config.json`` and checked on load."""
        directory = Path(directory)
        check_output_dir(directory, SAVED_MODEL, overwrite=True, option="directory to save into")
        with atomic_directory(directory) as tmp:
            self.model.save_pretrained(tmp)
            if tokenizer is not None:
                tokenizer.save_pretrained(tmp)
            state = {
                k: v.detach().contiguous().cpu() for k, v in self.codebooks.state_dict().items()
            }
            save_file(state, tmp / CODEBOOK_WEIGHTS, metadata={"format": "pt"})
            files = directory_checksums(tmp, exclude=[CODEBOOK_CONFIG])
            write_json(tmp / CODEBOOK_CONFIG, self._describe() | {"files": files})

    def _describe(self) -> dict[str, Any]:
        return {
            VERSION_KEY: __version__,
            "model_type": getattr(self.model.config, "model_type", None),
            "config": self.codebook_config.to_dict(),
            "sites": {
                name: {
                    "dim": self.codebook(name).config.dim,
                    "groups": self.codebook(name).config.groups,
                }
                for name in self.sites
            },
        }

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, verify: bool = True, **model_kwargs: Any
    ) -> CodebookModel:
        """Load a saved codebook model from a local directory or a hub repository.

        ``model_kwargs`` go to ``AutoModelForCausalLM.from_pretrained``; the hub options among
        them (``revision``, ``subfolder``, ``token``, ``cache_dir``, ...) also apply to the
        codebook files. Every file is checked against the checksum recorded when it was saved
        (``verify=False`` skips that, e.g. for very large models one trusts), so a damaged
        file is refused before anything is loaded.
        """
        from transformers import AutoModelForCausalLM

        from codebook_features.persist.sources import check_exists

        hub = {k: model_kwargs[k] for k in HUB_OPTIONS if k in model_kwargs}
        check_exists(str(name_or_path), "model")  # by name, not as a malformed hub id
        description = read_description(name_or_path, hub)  # fail early, before loading
        if verify:
            verify_files(name_or_path, description, hub)
        try:
            model = AutoModelForCausalLM.from_pretrained(name_or_path, **model_kwargs)
        except (OSError, ValueError, SafetensorError) as error:
            raise CodebookError(
                f"the base model in {name_or_path} could not be loaded "
                f"({str(error).splitlines()[0]}); re-save the model"
            ) from error
        return cls.load_codebooks(model, name_or_path, **hub)

    @classmethod
    def load_codebooks(
        cls, model: nn.Module, name_or_path: str | os.PathLike, **hub: Any
    ) -> CodebookModel:
        """Attach the codebooks saved at ``name_or_path`` to an already loaded ``model``;
        ``hub`` options (``revision``, ``subfolder``, ...) locate them on the hub."""
        description = read_description(name_or_path, hub)
        where = f"{CODEBOOK_CONFIG} in {name_or_path}"
        config = CodebookModelConfig.from_saved(
            description["config"], where, description.get(VERSION_KEY)
        )
        cbm = cls(model, config)
        saved_sites = description["sites"]
        for name in sorted(set(saved_sites) | set(cbm.sites)):
            mine = cbm.sites.get(name) and {
                "dim": cbm.codebook(name).config.dim,
                "groups": cbm.codebook(name).config.groups,
            }
            if mine != saved_sites.get(name):
                raise CodebookError(
                    f"the codebooks in {name_or_path} do not match this model at {name} "
                    f"(saved {saved_sites.get(name)}, model {mine}): load them onto the base "
                    "model they were trained with"
                )
        verify_files(name_or_path, description, hub, only=CODEBOOK_WEIGHTS)
        try:
            weights = load_file(fetch(name_or_path, CODEBOOK_WEIGHTS, hub))
        except (SafetensorError, OSError) as error:
            raise CodebookError(
                f"{CODEBOOK_WEIGHTS} in {name_or_path} is damaged ({str(error).splitlines()[0]})"
                "; save or copy the model again"
            ) from error
        try:
            cbm.codebooks.load_state_dict(weights, strict=True)
        except RuntimeError as error:
            raise CodebookError(
                f"{CODEBOOK_WEIGHTS} in {name_or_path} does not match its "
                f"{CODEBOOK_CONFIG}: the checkpoint is damaged ({str(error).splitlines()[0]})"
            ) from error
        return cbm
