"""Saved files from a newer version load, dropping what this version does not know, with one
warning that names the version; user input stays strict."""

import dataclasses
import json
import warnings
from dataclasses import dataclass, field

import pytest

from codebook_features import CodebookError, CodebookModelConfig, __version__
from codebook_features.settings.configs import from_dict
from codebook_features.settings.saved import (
    SavedFileWarning,
    build,
    config_from_saved,
    is_newer,
    read_saved,
    stamp,
)


@dataclass
class Inner:
    a: int
    b: float = 0.0


@dataclass
class Outer:
    name: str
    inner: Inner
    maybe: Inner | None = None
    many: list[Inner] = field(default_factory=list)
    by_name: dict[str, Inner] = field(default_factory=dict)


def test_versions_compare_as_numbers() -> None:
    major, minor, patch = (int(x) for x in __version__.split("."))
    assert is_newer(f"{major}.{minor + 10}.0") and is_newer(f"{major + 1}.0.0rc1")
    assert not is_newer(__version__) and not is_newer("0.0.1") and not is_newer(None)
    assert not is_newer(f"{major}.{minor}.{patch}+local")


def test_a_file_of_this_version_loads_silently() -> None:
    data = stamp({"name": "x", "inner": {"a": 1, "b": 2.0}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kept = read_saved(data, Outer, "x.json")
    assert kept == {"name": "x", "inner": {"a": 1, "b": 2.0}}
    assert build(Outer, kept) == Outer("x", Inner(1, 2.0))


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
        kept = read_saved(data, Outer, "out.json")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith(
        f"out.json was written by codebook-features version 99.1.0 (this is {__version__})"
    )
    for name in ("color", "inner.c", "maybe.d", "many[1].e", "by_name.k.f"):
        assert name in message
    assert "codebook_features_version" not in message
    assert build(Outer, kept) == Outer(
        "x", Inner(1), Inner(2), [Inner(3), Inner(4)], {"k": Inner(5)}
    )


def test_a_newer_file_without_new_keys_still_warns() -> None:
    with pytest.warns(SavedFileWarning, match="version 2.0.0 .* upgrade codebook-features"):
        read_saved({"name": "x", "inner": {"a": 1}}, Outer, "f.json", version="2.0.0")


def test_mapping_schemas() -> None:
    schema = {"step": None, "config": Inner}
    with pytest.warns(SavedFileWarning, match="an unknown version.*extra, config.z"):
        kept = read_saved({"step": 3, "extra": 1, "config": {"a": 1, "z": 0}}, schema, "s.json")
    assert kept == {"step": 3, "config": {"a": 1}}


def test_saved_codebook_settings_are_lenient_and_user_settings_strict() -> None:
    saved = dataclasses.asdict(CodebookModelConfig(num_codes=16, k=2, sites=["mlp"]))
    saved["temperature"] = 0.5  # a setting of a newer version
    with pytest.warns(SavedFileWarning, match="version 9.0.0.*temperature"):
        config = config_from_saved(CodebookModelConfig, saved, "codebook_config.json", "9.0.0")
    assert config == CodebookModelConfig(num_codes=16, k=2, sites=["mlp"])
    with pytest.raises(CodebookError, match="unknown setting"):
        from_dict(CodebookModelConfig, saved)
    with pytest.raises(CodebookError, match="unknown codebook setting"):
        CodebookModelConfig.from_dict(saved)


def test_checkpoint_state_from_a_newer_version_resumes(tmp_path) -> None:
    from codebook_features.training.checkpoint import read_state, required_files, write_manifest

    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    state = {
        "step": 3,
        "micro_batches": 3,
        "world_size": 1,
        "codebook_features_version": "5.0.0",
        "shards": 4,
        "config": {"training": {"steps": 6, "new_option": True}, "model": {"init": {"x": 1}}},
    }
    for name in required_files(state):
        (checkpoint / name).write_bytes(b"")
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    write_manifest(checkpoint)
    with pytest.warns(SavedFileWarning, match="version 5.0.0.*shards, config.training.new_option"):
        _, loaded = read_state(tmp_path)
    assert loaded["step"] == 3 and loaded["elapsed_s"] == 0.0
    assert loaded["config"] == {"training": {"steps": 6}, "model": {"init": {"x": 1}}}
