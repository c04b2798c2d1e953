"""The ``codebook`` command, and its one error boundary.

Every mistake a user can fix ends in one line on stderr and exit status 2, for every
sub-command: wrong options (argparse), our own ``CodebookError``, and what libraries raise for
missing, unreadable or damaged inputs (files, JSON, YAML, safetensors, datasets). A traceback
is shown only with ``--verbose`` (given before or after the sub-command) or for a real bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from codebook_features.errors import CodebookError

COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


class Parser(argparse.ArgumentParser):
    """argparse, with a wrong option reported on one line (and a pointer to ``--help``)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def common_options() -> Parser:
    """Options every (sub-)command accepts, wherever they are given."""
    parser = Parser(add_help=False)
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,  # given after a sub-command, it keeps the top-level value
        help="show info logs, and tracebacks of errors",
    )
    return parser


def add_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    """A sub-command parser with the common options."""
    return sub.add_parser(
        name, help=help_text, parents=[common_options()], formatter_class=argparse.HelpFormatter
    )


def integer(least: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``least``, checked before any work."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        return value

    parse.__name__ = f"integer >= {least}"
    return parse


def command(name: str, help_text: str) -> Callable[[Callable], Callable]:
    def register(setup: Callable[[argparse.ArgumentParser], None]) -> Callable:
        COMMANDS[name] = (help_text, setup)
        return setup

    return register


def add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """``--config FILE`` and one option per field of ``cls`` (which override the file)."""
    from codebook_features.settings.configs import add_arguments

    parser.add_argument("--config", help="YAML or JSON file with the settings below")
    add_arguments(parser, cls)


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """``cls`` built from ``--config FILE`` (optional) plus the dotted options given."""
    from codebook_features.settings.configs import from_dict, load_file, merge, overrides_from_args

    base = load_file(args.config) if args.config else {}
    return from_dict(cls, merge(base, overrides_from_args(args, cls)))


@command("train", "train a model with codebooks (or a baseline without)")
def _train_command(parser: argparse.ArgumentParser) -> None:
    from codebook_features.settings.configs import add_arguments
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

        from codebook_features.persist.files import METRICS_FILE
        from codebook_features.settings.configs import to_dict
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

    parser = Parser(
        prog="codebook", description="Codebook features: train, analyse and steer codebooks."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show info logs, and tracebacks of errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _load_commands()
    for name, (help_text, setup) in COMMANDS.items():
        setup(add_command(sub, name, help_text))
    return parser


def _load_commands() -> None:
    """Import the modules that register further sub-commands."""
    import codebook_features.app.cli
    import codebook_features.demos.fsm.cli
    import codebook_features.demos.lm.cli
    import codebook_features.search.cli
    import codebook_features.steering.concept_cli
    import codebook_features.steering.evaluate_cli
    import codebook_features.steering.steer_cli
    import codebook_features.store.cli  # noqa: F401


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
        sys.stdout.flush()
    except BrokenPipeError:
        # the reader stopped early (`| head`): nothing is wrong, and nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CodebookError as error:
        if args.verbose:
            raise
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        return 2
    except Exception as error:
        message = input_error(error)
        if message is None or args.verbose:
            raise
        print(f"error: {one_line(message)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            "interrupted; training continues from its last checkpoint with --training.resume "
            "true, `codebook record` from its last finished shard when run again with the same "
            "settings, `codebook fsm demo`, `codebook lm demo` and `codebook evaluate-steering` "
            "continue where they stopped when run again",
            file=sys.stderr,
        )
        return 130
    return 0


def one_line(text: str) -> str:
    return " ".join(text.split())


def input_error(error: Exception) -> str | None:
    """What to tell the user about an error raised while reading their inputs, or ``None`` when
    it is a bug (shown with its traceback)."""
    import json

    import yaml
    from safetensors import SafetensorError

    if isinstance(error, OSError):
        name = f" {error.filename}" if error.filename else ""
        reason = error.strerror or str(error).splitlines()[0]
        return f"could not use{name}: {reason}; check the path and its permissions"
    if isinstance(error, json.JSONDecodeError):
        return f"a JSON input is not valid JSON ({error}): check the file"
    if isinstance(error, UnicodeDecodeError):
        return "an input that should be text is not (binary data?): check the files given"
    if isinstance(error, yaml.YAMLError):
        return f"a YAML input is not valid YAML ({str(error).splitlines()[0]}): check the file"
    if isinstance(error, SafetensorError):
        return f"a safetensors file is damaged or not one ({error}): save or copy it again"
    if type(error).__module__.split(".")[0] in ("datasets", "pyarrow"):
        return f"the data could not be read ({str(error).splitlines()[0]}): check the files"
    return None


if __name__ == "__main__":
    sys.exit(main())
