"""Command-line options generated from a settings type: every field an option documented by its
docstring, nested settings as dotted options, values read as the fields' types take them."""

import argparse
from typing import Literal

import pytest
from pydantic import Field

from codebook_features import CodebookError
from codebook_features.settings.base import NonNegativeInt, Settings
from codebook_features.settings.options import (
    POSITIONAL,
    Parser,
    add_options,
    settings_from_args,
)


class Sampling(Settings):
    """How to sample."""

    samples: NonNegativeInt = 1
    """Continuations per prompt."""
    temperature: float = 1.0
    """Sampling temperature."""


class Command(Settings):
    """A command's settings."""

    store: str = Field(json_schema_extra=POSITIONAL)
    """The store directory."""
    sites: list[str] = Field(default_factory=list)
    """Sites by name or glob."""
    layers: Literal["all"] | list[int] = "all"
    """All layers, or some."""
    limit: int | None = None
    """At most this many."""
    overwrite: bool = False
    """Replace what is there."""
    per_site: dict[str, int] = Field(default_factory=dict)
    """Numbers per site."""
    sampling: Sampling = Field(default_factory=Sampling)
    """How to sample."""


def parse(*argv: str) -> Command:
    parser = Parser(prog="cmd")
    add_options(parser, Command)
    return settings_from_args(Command, parser.parse_args(argv))


def test_every_field_is_a_documented_option(capsys) -> None:
    parser = Parser(prog="cmd")
    add_options(parser, Command)
    parser.print_help()
    text = " ".join(capsys.readouterr().out.split())
    for option, doc in (
        ("--sites", "Sites by name or glob."),
        ("--sampling.samples", "Continuations per prompt."),
        ("--sampling.temperature", "Sampling temperature."),
        ("--overwrite [BOOL]", "Replace what is there."),
    ):
        assert option in text and doc in text
    assert "[str; required]" in text and "[int | none; default: None]" in text


def test_values_are_read_as_their_fields_take_them() -> None:
    given = parse(
        "s",
        "--sites",
        "mlp",
        "attn",
        "--layers",
        "0",
        "--per_site",
        '{"mlp": 2}',
        "--overwrite",
        "--sampling.samples",
        "3",
    )
    assert given == Command(
        store="s",
        sites=["mlp", "attn"],
        layers=[0],
        per_site={"mlp": 2},
        overwrite=True,
        sampling=Sampling(samples=3),
    )
    assert parse("--store", "s", "--layers", "all", "--limit", "none").layers == "all"
    assert parse("s", "--sites", "none", "--overwrite", "false").sites == []
    assert parse("s", "--overwrite", "false").overwrite is False


def test_a_config_file_gives_the_base_that_options_override(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("store: s\nsampling: {samples: 5, temperature: 0.5}\n")
    given = parse("--config", str(path), "--sampling.samples", "2")
    assert given.sampling == Sampling(samples=2, temperature=0.5)


def test_mistakes_are_one_line_that_names_the_option(tmp_path) -> None:
    with pytest.raises(CodebookError, match=r"^sampling\.samples: input should be greater"):
        parse("s", "--sampling.samples", "-1")
    with pytest.raises(CodebookError, match=r"--per_site takes a JSON mapping"):
        parse("s", "--per_site", "mlp=2")
    with pytest.raises(CodebookError, match=r"^store is required$"):
        parse()
    (tmp_path / "c.yaml").write_text("stor: s\n")
    with pytest.raises(CodebookError, match=r"^unknown setting stor; known: store, sites"):
        parse("--config", str(tmp_path / "c.yaml"))
    with pytest.raises(SystemExit):
        Parser(prog="cmd").parse_args(["--nothing"])
    assert isinstance(Parser(prog="x"), argparse.ArgumentParser)
