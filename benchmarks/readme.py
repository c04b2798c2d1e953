"""Rewriting a benchmark's table in ``benchmarks/README.md`` between its marker comments."""

from __future__ import annotations

from pathlib import Path

from codebook_features.persist.files import write_text


def replace_section(readme: Path, name: str, table: str) -> None:
    """Put ``table`` between ``<!-- {name}:start -->`` and ``<!-- {name}:end -->`` (atomically);
    a README without those markers is refused, so no table goes missing unnoticed."""
    text = readme.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{readme} lacks the {start} ... {end} markers of the table")
    head, rest = text.split(start, 1)
    write_text(readme, f"{head}{start}\n{table}\n{end}{rest.split(end, 1)[1]}")
