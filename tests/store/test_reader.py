"""The store's reader and index, on a store with planted codes: ids and postings against slow
scans, SQL over the shards, damage, concurrent builds, and readers that never write."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from codebook_features import CodebookError
from codebook_features.attach.code_ref import CodeRef
from codebook_features.search import regex_codes
from codebook_features.store.postings import postings_files
from codebook_features.store.reader import CodeStore
from tests.store.synthetic import DRAGON, SITES, reindex, write_store


@pytest.fixture
def store(tmp_path) -> CodeStore:
    return CodeStore(write_store(tmp_path / "store"))


def test_index_matches_a_slow_scan(store) -> None:
    for site, (groups, k, num_codes) in SITES.items():
        ids = np.asarray(store.ids(site))
        assert ids.shape == (store.num_tokens, groups, k)
        counts = store.counts(site)
        for group in range(groups):
            for code in [*range(8), *range(10, 15), num_codes - 1]:
                expected = np.flatnonzero((ids[:, group] == code).any(-1))
                got = store.occurrences(CodeRef(site, group, code))
                assert np.array_equal(got, expected)
                assert counts[group, code] == len(expected)
    assert store.token_text(0) == store.texts[0][: int(store.end[0])]


def test_sql_over_the_shards(store) -> None:
    rows = store.sql("select count(*) from tokens").fetchall()[0][0]
    assert rows == store.num_tokens
    labels = dict(store.sql("select label, count(*) from documents group by label").fetchall())
    assert sum(labels.values()) == store.num_documents
    fires = store.sql(
        f'select count(*) from tokens where list_contains("layers.0.mlp", {DRAGON})'
    ).fetchall()[0][0]
    assert fires == store.counts("layers.0.mlp")[0, DRAGON]
    with pytest.raises(CodebookError, match="the query failed"):
        store.sql("select nothing from nowhere")


def test_damage_is_refused_clearly(tmp_path) -> None:
    root = write_store(tmp_path / "a", index=False)
    shard = next((root / "shards").glob("tokens-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CodebookError, match=r"tokens-.*\.parquet in .* is damaged"):
        reindex(root)
    assert not (root / "index").exists()
    root = write_store(tmp_path / "b")
    (root / "manifest.json").write_text("{truncated")
    with pytest.raises(CodebookError, match=r"manifest\.json is damaged"):
        CodeStore(root)
    with pytest.raises(CodebookError, match="not a finished code store"):
        CodeStore(tmp_path)


def test_opening_and_searching_a_store_leave_it_unchanged(tmp_path, capsys) -> None:
    """The index is written with the store; readers never write. A store without a current
    index (recorded by an earlier version, or edited) is refused with the command that
    builds it, and that command does."""
    from codebook_features.cli import main

    root = write_store(tmp_path / "s")

    def files() -> dict[str, bytes]:
        found = (p for p in root.rglob("*") if p.is_file())
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in found}

    before = files()
    mode = os.stat(root).st_mode & 0o777  # whoever can read the store can read its index
    assert os.stat(root / "index").st_mode & 0o777 == mode
    store = CodeStore(root)
    store.verify()
    regex_codes(store, "dragon")
    store.occurrences(f"layers.0.mlp/0/{DRAGON}")
    assert main(["search", "regex", "--pattern", "dragon", "--store", str(root)]) == 0
    assert files() == before
    manifest = root / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    refusal = rf"no current index .*: run `codebook index --store {root}`"
    with pytest.raises(CodebookError, match=refusal):
        CodeStore(root)
    assert {n: b for n, b in files().items() if n != "manifest.json"} == {
        n: b for n, b in before.items() if n != "manifest.json"
    }
    capsys.readouterr()
    assert main(["index", "--store", str(root)]) == 0
    assert "bytes per token" in capsys.readouterr().out
    assert CodeStore(root).num_tokens > 0
    assert re.fullmatch(
        r"[0-9a-f]{64}",
        __import__("json").loads((root / "index" / "index.json").read_text())["manifest_sha256"],
    )
    assert main(["index", "--store", str(tmp_path / "nothing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_index_with_tiny_chunks_equals_one_pass(tmp_path, monkeypatch) -> None:
    from codebook_features.store import index

    one_pass = CodeStore(write_store(tmp_path / "a"))
    monkeypatch.setattr(index, "CHUNK_ROWS", 7)  # chunk boundaries inside documents and codes
    chunked = CodeStore(write_store(tmp_path / "b"))
    for site in SITES:
        assert np.array_equal(np.asarray(chunked.ids(site)), np.asarray(one_pass.ids(site)))
        for name in (
            index.indptr_file(site),
            *postings_files(site),
            *index.pairs_files(site),
        ):
            assert np.array_equal(
                np.load(tmp_path / "a" / "index" / name), np.load(tmp_path / "b" / "index" / name)
            )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["counts"].pop("tokens"), "tokens"),
        (lambda m: m["shards"][0].pop("tokens"), "tokens"),
        (lambda m: m.__setitem__("shards", [1]), "damaged"),
        (lambda m: m["sites"]["layers.0.mlp"].__setitem__("k", 0), r"sites\.layers\.0\.mlp\.k"),
        (lambda m: m.pop("sites"), "sites is required"),
    ],
)
def test_manifests_missing_keys_are_refused(tmp_path, capsys, change, message) -> None:
    import json

    from codebook_features.cli import main

    root = write_store(tmp_path / "s")
    manifest = json.loads((root / "manifest.json").read_text())
    change(manifest)
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CodebookError, match=message):
        CodeStore(root)
    assert main(["search", "regex", "--store", str(root), "--pattern", "x"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_a_manifest_from_a_newer_version_loads_with_a_warning(tmp_path) -> None:
    import json

    from codebook_features.settings.base import SavedFileWarning
    from codebook_features.store.schema import SCHEMA_VERSION

    root = write_store(tmp_path / "s")
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["sites"]["layers.0.mlp"]["future"] = 1
    manifest["codebook_features_version"] = "99.0.0"
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.warns(SavedFileWarning, match=r"99\.0\.0.*not know: sites\.layers\.0\.mlp\.future"):
        reindex(root)
        store = CodeStore(root)
    assert store.sites["layers.0.mlp"].num_codes == SITES["layers.0.mlp"][2]
    manifest["schema_version"] = SCHEMA_VERSION + 1  # a newer format is refused
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CodebookError, match=f"store format {SCHEMA_VERSION + 1}.*upgrade"):
        CodeStore(root)


def test_a_damaged_index_is_reported(tmp_path) -> None:
    root = write_store(tmp_path / "s")
    CodeStore(root)
    rows = root / "index" / "layers.0.mlp.postings.npy"
    rows.write_bytes(rows.read_bytes()[:20])
    with pytest.raises(
        CodebookError, match=r"index/layers\.0\.mlp\.postings\.npy in .* is damaged"
    ):
        CodeStore(root).occurrences("layers.0.mlp/0/7")


def flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


def test_flipped_bits_anywhere_a_query_reads_are_refused(tmp_path) -> None:
    """The same size, other bytes: an index file, a documents shard or an activations file
    checked against its recorded sha256 the first time a query reads it, not answered from."""
    root = write_store(tmp_path / "s")
    store = CodeStore(root)
    expected = store.occurrences("layers.0.mlp/0/7")
    flip(root / "index" / "layers.0.mlp.postings.npy", -12)  # packed rows, not the header
    assert np.array_equal(store.occurrences("layers.0.mlp/0/7"), expected)  # checked already
    with pytest.raises(CodebookError, match=r"postings\.npy in .* is damaged.*rebuild"):
        CodeStore(root).occurrences("layers.0.mlp/0/7")
    shard = next((root / "shards").glob("documents-*.parquet"))
    flip(shard, len(shard.read_bytes()) // 2)
    with pytest.raises(CodebookError, match=r"documents-.*\.parquet in .* is damaged.*record"):
        _ = CodeStore(root).texts
    with pytest.raises(CodebookError, match=r"documents-.*\.parquet in .* is damaged"):
        CodeStore(root).sql("select count(*) from documents")
    fresh = write_store(tmp_path / "u")
    CodeStore(fresh).verify()  # every file, at once
    flip(fresh / "index" / "token.npy", -2)
    with pytest.raises(CodebookError, match=r"index/token\.npy in .* is damaged"):
        CodeStore(fresh).verify()
    other = write_store(tmp_path / "t")
    CodeStore(other)
    info = other / "index" / "index.json"
    info.write_text(
        json.dumps({k: v for k, v in json.loads(info.read_text()).items() if k != "files"})
    )
    with pytest.raises(CodebookError, match="does not list the index's checksums"):
        CodeStore(other).ids("layers.0.mlp")


def _open_and_count(path: str) -> int:
    from codebook_features.store.index import ensure_index
    from codebook_features.store.reader import read_manifest

    ensure_index(Path(path), read_manifest(Path(path)))
    store = CodeStore(path)
    return int(store.counts("layers.0.mlp")[0, DRAGON])


def test_processes_indexing_a_store_together_build_one_index(tmp_path, monkeypatch) -> None:
    import multiprocessing
    import os

    from codebook_features.store import index

    root = write_store(tmp_path / "store", index=False)
    builds = tmp_path / "builds"
    builds.mkdir()
    real_build = index.build_index

    def counted_build(*args):  # the forked processes inherit this
        (builds / str(os.getpid())).touch()
        return real_build(*args)

    monkeypatch.setattr(index, "build_index", counted_build)
    with multiprocessing.get_context("fork").Pool(3) as pool:
        counts = pool.map(_open_and_count, [str(root)] * 3)
    assert counts[0] > 0 and len(set(counts)) == 1
    assert len(list(builds.iterdir())) == 1  # the others waited and found it built
    assert index.index_is_current(root)
    assert not list(root.glob(".index.*.tmp"))
