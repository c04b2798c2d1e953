"""The ``codebook`` command.

Mistakes a user can fix are printed on one line (no traceback) with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from codebook_features.errors import CodebookError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help_text: str) -> Callable[[Callable], Callable]:
    def register(setup: Callable[[argparse.ArgumentParser], None]) -> Callable:
        COMMANDS[name] = (help_text, setup)
        return setup

    return register


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """``cls`` built from ``--config FILE`` (optional) plus the dotted options given."""
    from codebook_features.configs import from_dict, load_file, merge, overrides_from_args

    base = load_file(args.config) if args.config else {}
    return from_dict(cls, merge(base, overrides_from_args(args, cls)))


@command("train", "train a model with codebooks (or a baseline without)")
def _train_command(parser: argparse.ArgumentParser) -> None:
    from codebook_features.configs import add_arguments
    from codebook_features.training.config import RunConfig

    parser.description = (
        "Train codebooks into a causal LM. Settings come from --config (YAML or JSON, with "
        "sections model, data, codebooks, training) and the options below, which override it."
    )
    parser.add_argument("--config", help="YAML or JSON file with the run's settings")
    parser.add_argument(
        "--print-config", action="store_true", help="print the resolved configuration and exit"
    )
    add_arguments(parser, RunConfig)

    def run(args: argparse.Namespace) -> None:
        import yaml

        from codebook_features.configs import to_dict
        from codebook_features.files import METRICS_FILE
        from codebook_features.training import train

        for section in ("model", "data"):
            given = any(k.startswith(f"{section}.") for k in vars(args))
            if not args.config and not given:
                raise CodebookError(f"no {section} settings: pass --config FILE or --{section}.*")
        config = config_from_args(RunConfig, args)
        if args.print_config:
            print(yaml.safe_dump(to_dict(config), sort_keys=False), end="")
            return
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

    parser.set_defaults(run=run)


def build_parser() -> argparse.ArgumentParser:
    from codebook_features import __version__

    parser = argparse.ArgumentParser(
        prog="codebook", description="Codebook features: train, analyse and steer codebooks."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="show info logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _load_commands()
    for name, (help_text, setup) in COMMANDS.items():
        setup(sub.add_parser(name, help=help_text, formatter_class=argparse.HelpFormatter))
    return parser


def _load_commands() -> None:
    """Import the modules that register further sub-commands."""
    import codebook_features.fsm.cli  # noqa: F401


def _quiet_libraries() -> None:
    """Only our own progress bars: hide the loading and writing bars of the HF libraries."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    if not args.verbose:
        _quiet_libraries()
    try:
        args.run(args)
    except CodebookError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; training continues from its last checkpoint with --training.resume "
            "true, and `codebook fsm demo` continues where it stopped when run again",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
