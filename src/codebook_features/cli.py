"""The ``codebook`` command: a table of sub-commands, and its one error boundary.

Each sub-command lives in its stage's package (``training/cli.py``, ``search/cli.py``, ...) as a
``configure(parser)`` function that adds the options of its settings type
(:mod:`~codebook_features.settings.options`) and sets ``run``. Only the module of the command
being run is imported, so ``codebook search regex --help`` imports neither torch nor
transformers nor the web stack.

Every mistake a user can fix ends in one line on stderr and exit status 2: wrong options
(argparse), our own ``CodebookError``, and what libraries raise for missing, unreadable or
damaged inputs (files, JSON, YAML, safetensors, datasets). A traceback is shown only with
``--verbose`` (given before or after the sub-command) or for a real bug.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple

from codebook_features.errors import CodebookError
from codebook_features.settings.options import Parser, add_subcommand


class Command(NamedTuple):
    module: str
    """The module whose ``configure(parser)`` sets the command up."""
    help: str


COMMANDS: dict[str, Command] = {
    "train": Command(
        "codebook_features.training.cli", "train a model with codebooks (or a baseline without)"
    ),
    "record": Command(
        "codebook_features.store.cli",
        "record which codes fire on which tokens of a text corpus (a code store)",
    ),
    "index": Command(
        "codebook_features.store.index_cli",
        "build a code store's index (for stores recorded by an earlier version)",
    ),
    "search": Command(
        "codebook_features.search.cli",
        "search a code store: codes for a pattern, a token, or topics",
    ),
    "concept": Command(
        "codebook_features.steering.concept_cli",
        "concepts: named sets of codes to steer with (new, show, list)",
    ),
    "steer": Command(
        "codebook_features.steering.steer_cli",
        "continue a prompt without and with forced codes, side by side",
    ),
    "evaluate-steering": Command(
        "codebook_features.steering.evaluate_cli",
        "does forcing a concept's codes steer what the model writes? (with activation addition)",
    ),
    "serve": Command(
        "codebook_features.app.cli",
        "browse a code store in a web browser: search, code pages, topics, steering",
    ),
    "fsm": Command(
        "codebook_features.demos.fsm.cli",
        "the TokFSM experiment: make data, train, evaluate, analyse, intervene, demo",
    ),
    "lm": Command(
        "codebook_features.demos.lm.cli",
        "the language demo: its corpus (lm data) and the whole run (lm demo)",
    ),
}
"""Sub-command name -> where it lives and its one-line help."""


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser of the ``codebook`` command, with the one sub-command named in ``argv`` set
    up (every one when ``argv`` is ``None``)."""
    from codebook_features._version import __version__

    parser = Parser(
        prog="codebook", description="Codebook features: train, analyse and steer codebooks."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="show info logs, and tracebacks of errors"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = set(COMMANDS) if argv is None else {next((a for a in argv if a in COMMANDS), "")}
    for name, command in COMMANDS.items():
        command_parser = add_subcommand(sub, name, command.help)
        if name in wanted:
            importlib.import_module(command.module).configure(command_parser)
    return parser


def _quiet_libraries() -> None:
    """Only our own progress bars: hide the loading and writing bars of the HF libraries
    (when the command has imported them)."""
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        logging_ = sys.modules["transformers"].utils.logging
        logging_.disable_progress_bar()
        logging_.set_verbosity_error()
    else:  # imported later by the command: the environment says the same
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
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

    if isinstance(error, OSError):
        name = f" {error.filename}" if error.filename else ""
        reason = error.strerror or str(error).splitlines()[0]
        return f"could not use{name}: {reason}; check the path and its permissions"
    if isinstance(error, json.JSONDecodeError):
        return f"a JSON input is not valid JSON ({error}): check the file"
    if isinstance(error, UnicodeDecodeError):
        return "an input that should be text is not (binary data?): check the files given"
    if "yaml" in sys.modules and isinstance(error, sys.modules["yaml"].YAMLError):
        return f"a YAML input is not valid YAML ({str(error).splitlines()[0]}): check the file"
    if "safetensors" in sys.modules and isinstance(
        error, sys.modules["safetensors"].SafetensorError
    ):
        return f"a safetensors file is damaged or not one ({error}): save or copy it again"
    if type(error).__module__.split(".")[0] in ("datasets", "pyarrow"):
        return f"the data could not be read ({str(error).splitlines()[0]}): check the files"
    return None


if __name__ == "__main__":
    sys.exit(main())
