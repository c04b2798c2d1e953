"""The one settings base: what people write is strict and gets one-line errors that name the
setting; files this library saved load even when a newer version wrote them, dropping what
this version does not know with one warning that names the version."""

import json
import warnings
from typing import Literal

import pytest
from pydantic import Field

from codebook_features import CodebookError, CodebookModelConfig, __version__
from codebook_features.settings.base import (
    PositiveInt,
    Record,
    SavedFileWarning,
    Settings,
    is_newer,
    stamp,
)


class Inner(Settings):
    a: PositiveInt
    """A count."""
    b: float = 0.0


class Outer(Record):
    name: str
    inner: Inner
    maybe: Inner | None = None
    many: list[Inner] = Field(default_factory=list)
    by_name: dict[str, Inner] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    layers: Literal["all"] | list[int] = "all"


def test_versions_compare_as_numbers() -> None:
    major, minor, patch = (int(x) for x in __version__.split("."))
    assert is_newer(f"{major}.{minor + 10}.0") and is_newer(f"{major + 1}.0.0rc1")
    assert not is_newer(__version__) and not is_newer("0.0.1") and not is_newer(None)
    assert not is_newer(f"{major}.{minor}.{patch}+local")


def test_a_file_of_this_version_loads_silently_and_round_trips() -> None:
    outer = Outer(name="x", inner=Inner(a=1, b=2.0), many=[Inner(a=3)], by_name={"k": Inner(a=4)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = Outer.from_saved(stamp(outer.to_dict()), "x.json")
    assert again == outer


def test_unknown_keys_are_dropped_and_named_at_every_depth() -> None:
    data = {
        "name": "x",
        "color": "red",
        "inner": {"a": 1, "c": 3},
        "maybe": {"a": 2, "d": 4},
        "many": [{"a": 3}, {"a": 4, "e": 5}],
        "by_name": {"k": {"a": 5, "f": 6}},
        "codebook_features_version": "99.1.0",
    }
    with pytest.warns(SavedFileWarning) as caught:
        kept = Outer.from_saved(data, "out.json")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(
        f"out.json was written by codebook-features version 99.1.0 (this is {__version__})"
    )
    for name in ("color", "inner.c", "maybe.d", "many.1.e", "by_name.k.f"):
        assert name in message
    assert "codebook_features_version" not in message
    assert kept == Outer(
        name="x",
        inner=Inner(a=1),
        maybe=Inner(a=2),
        many=[Inner(a=3), Inner(a=4)],
        by_name={"k": Inner(a=5)},
    )


def test_a_newer_file_without_new_keys_still_warns() -> None:
    with pytest.warns(SavedFileWarning, match="version 2.0.0 .* upgrade codebook-features"):
        Outer.from_saved({"name": "x", "inner": {"a": 1}}, "f.json", version="2.0.0")


def test_a_saved_file_with_a_wrong_value_is_an_error_not_a_warning() -> None:
    with pytest.raises(CodebookError, match=r"f\.json: inner\.a: input should be greater"):
        Outer.from_saved({"name": "x", "inner": {"a": 0}}, "f.json")


def test_what_people_write_is_strict_with_one_line_that_names_the_setting() -> None:
    with pytest.raises(CodebookError, match=r"^unknown setting inner\.c; known: a, b$"):
        Outer.from_dict({"name": "x", "inner": {"a": 1, "c": 3}})
    with pytest.raises(CodebookError, match=r"^inner\.a: input should be greater .*, got 0$"):
        Outer(name="x", inner={"a": 0})
    with pytest.raises(CodebookError, match=r"^inner\.a: expected a whole number, not true"):
        Outer(name="x", inner={"a": True})
    with pytest.raises(CodebookError, match=r"^inner is required$"):
        Outer.from_dict({"name": "x"})
    with pytest.raises(CodebookError, match="settings must be a mapping"):
        Outer.from_dict([1], "settings")


def test_files_and_options_write_lists_and_empty_values_loosely() -> None:
    read = Outer.from_dict(
        {"name": "x", "inner": {"a": "1e3", "b": "1e-3"}, "tags": "one", "maybe": "none"}
    )
    assert read.inner == Inner(a=1000, b=0.001) and read.tags == ["one"] and read.maybe is None
    assert Outer.from_dict({"name": "x", "inner": {"a": 1}, "tags": "none"}).tags == []
    assert Outer.from_dict({"name": "x", "inner": {"a": 1}, "layers": "all"}).layers == "all"
    assert Outer.from_dict({"name": "x", "inner": {"a": 1}, "layers": 2}).layers == [2]


def test_replace_validates_like_a_new_one() -> None:
    outer = Outer(name="x", inner=Inner(a=1))
    assert outer.replace(name="y") == Outer(name="y", inner=Inner(a=1))
    with pytest.raises(CodebookError, match=r"inner\.a"):
        outer.replace(inner={"a": -1})


def test_saved_codebook_settings_are_lenient_and_user_settings_strict() -> None:
    saved = CodebookModelConfig(num_codes=16, k=2, sites=["mlp"]).to_dict()
    saved["temperature"] = 0.5  # a setting of a newer version
    with pytest.warns(SavedFileWarning, match="version 9.0.0.*temperature"):
        config = CodebookModelConfig.from_saved(saved, "codebook_config.json", "9.0.0")
    assert config == CodebookModelConfig(num_codes=16, k=2, sites=["mlp"])
    with pytest.raises(CodebookError, match="unknown setting temperature"):
        CodebookModelConfig.from_dict(saved)


def test_checkpoint_state_from_a_newer_version_resumes(tmp_path) -> None:
    from codebook_features.training.checkpoint import (
        read_state,
        required_files,
        write_checkpoint_checksums,
    )

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    config = {
        "model": {"init": {"model_type": "gpt_neox"}, "tokenizer": "tok"},
        "data": {"dataset": "corpus.txt"},
        "codebooks": {"num_codes": 8},
        "training": {"steps": 6, "new_option": True, "log_to": ["wandb"]},
    }
    state = {
        "step": 3,
        "micro_batches": 3,
        "world_size": 1,
        "codebook_features_version": "5.0.0",
        "shards": 4,
        "config": config,
    }
    for name in required_files(state):
        (checkpoint / name).write_bytes(b"")
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    write_checkpoint_checksums(checkpoint)
    with pytest.warns(SavedFileWarning, match=r"version 5\.0\.0") as caught:
        _, loaded = read_state(tmp_path)
    assert "shards" in str(caught[0].message)
    assert "config.training.new_option" in str(caught[0].message)
    assert loaded["step"] == 3 and loaded["elapsed_s"] == 0.0
    assert loaded["config"]["training"]["steps"] == 6
    assert "new_option" not in loaded["config"]["training"]


def test_a_logger_is_checked_when_a_run_starts_not_when_settings_are_read(monkeypatch) -> None:
    """A checkpoint's saved settings name the loggers of the machine that wrote it; they read
    on a machine without them, and only a run that would use one refuses it."""
    import importlib.util

    from codebook_features.training.config import TrainingConfig, check_loggers

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    settings = TrainingConfig(log_to=["wandb"])
    with pytest.raises(CodebookError, match=r"training\.log_to names wandb, which is not"):
        check_loggers(settings)
    check_loggers(TrainingConfig())
