"""The one exception type for mistakes a user can fix (bad config, bad input, missing file)."""


class CodebookError(ValueError):
    """A user-facing error whose message says what went wrong and what to do about it.

    The command-line tool prints these on one line, without a traceback. It subclasses
    ``ValueError`` so code that already catches bad values keeps working.
    """


def deprecated(old: str, new: str) -> None:
    """Warn once per call site that ``old`` is an old name of ``new``."""
    import warnings

    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=3)
