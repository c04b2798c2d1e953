"""``codebook search baselines`` (registered with the other queries in ``search/cli.py``): codes
vs single neurons vs TopK SAE latents on regex features (a table, or ``--json``); see
:mod:`~codebook_features.search.baselines` for the protocol."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from codebook_features.errors import CodebookError


@dataclass
class BaselinesSearch:
    """Codes vs the best single neuron vs the best TopK SAE latent, at the code's recall."""

    store: str = ""
    """The code store directory, recorded with ``--activation_sites`` for ``site``."""
    site: str = ""
    """The site whose codes, activations and SAE are compared, e.g. ``layers.3.mlp``."""
    patterns: list[str] = field(default_factory=list)
    """Regular expressions, one feature each (a capture group: only its tokens count)."""
    sae_steps: int = 300
    """Adam steps of the SAE's training."""
    max_tokens: int = 100_000
    """Score (and train the SAE on) at most this many rows with activations (a seeded sample)."""
    seed: int = 0
    """Seed of the sample and of the SAE."""

    def __post_init__(self) -> None:
        if not self.store or not self.site or not self.patterns:
            raise CodebookError(
                "give --store DIR, --site SITE and --patterns P1 P2 ... (see --help)"
            )
        if self.sae_steps < 0 or self.max_tokens < 2:
            raise CodebookError("--sae_steps must be at least 0 and --max_tokens at least 2")


def run_baselines(args: argparse.Namespace) -> None:
    from codebook_features.search.baselines import (
        activation_sample,
        compare_baselines,
        train_site_sae,
    )
    from codebook_features.search.sae import fraction_of_variance_unexplained
    from codebook_features.settings.configs import from_dict, overrides_from_args
    from codebook_features.store.reader import CodeStore

    query = from_dict(BaselinesSearch, overrides_from_args(args, BaselinesSearch))
    store = CodeStore(query.store)
    options = {"max_tokens": query.max_tokens, "seed": query.seed}
    sae = train_site_sae(store, query.site, steps=query.sae_steps, **options)
    fvu = fraction_of_variance_unexplained(sae, activation_sample(store, query.site, **options)[1])
    table = compare_baselines(store, query.patterns, query.site, sae=sae, **options)
    if args.json:
        print(json.dumps({"sae_fvu": fvu, "rows": [row.to_dict() for row in table]}))
        return
    print(
        f"{table[-1].tokens:,} tokens with activations at {query.site}; SAE of "
        f"{sae.W_dec.shape[0]:,} latents, k = {sae.k}, fraction of variance unexplained {fvu:.3f}"
    )
    print(
        f"{'pattern':<24} {'tokens':>7} {'code':<28} {'code P':>6} {'R':>5} "
        f"{'neuron P':>8} {'SAE P':>6}"
    )

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    for row in table:
        print(
            f"{row.pattern[:24]:<24} {row.positives:>7,} {row.code or '-':<28} "
            f"{number(row.code_precision):>6} {number(row.code_recall):>5} "
            f"{number(row.neuron_precision):>8} {number(row.sae_precision):>6}"
        )
