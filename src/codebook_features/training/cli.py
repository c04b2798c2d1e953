"""``codebook train``: a training run from ``--config`` and options (see :class:`RunConfig`)."""

from __future__ import annotations

import argparse

from codebook_features.errors import CodebookError
from codebook_features.settings.options import add_options, settings_from_args
from codebook_features.training.config import RunConfig


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Train codebooks into a causal LM. Settings come from --config (YAML or JSON, with "
        "sections model, data, codebooks, training) and the options below, which override it."
    )
    parser.add_argument(
        "--print_config", action="store_true", help="print the resolved settings and exit"
    )
    add_options(parser, RunConfig)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    for section in ("model", "data"):
        given = any(k.startswith(f"{section}.") for k in vars(args))
        if not args.config and not given:
            raise CodebookError(f"no {section} settings: pass --config FILE or --{section}.*")
    config = settings_from_args(RunConfig, args)
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return
    from codebook_features.persist.files import METRICS_FILE
    from codebook_features.training.loop import train

    result = train(config)
    if result.model_dir is None:
        print(f"stopped at step {result.step}; continue with --training.resume true")
        return
    final = result.metrics
    line = f"done: {result.step} steps"
    if final is not None:
        line += f", val loss {final.loss:.4f}"
        if final.without_codebooks_loss is not None:
            line += f" (codebooks disabled: {final.without_codebooks_loss:.4f})"
    print(line)
    print(f"model: {result.model_dir}\nmetrics: {result.run_dir / METRICS_FILE}")
