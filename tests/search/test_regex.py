"""The store's reader and index, and regex -> codes, on a store with planted codes."""

import re

import numpy as np
import pytest

from codebook_features import CodebookError
from codebook_features.code_ref import CodeRef
from codebook_features.search import regex_codes, regex_token_rows
from codebook_features.store.reader import CodeStore

from .synthetic import DRAGON, SITES, write_store


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


def test_planted_code_is_found_with_precision_and_recall_one(store) -> None:
    ranked, positives = regex_codes(store, r"dragon")
    best = ranked[0]
    assert best.code == CodeRef("layers.0.mlp", 0, DRAGON)
    assert (best.precision, best.recall) == (1.0, 1.0)
    assert best.support == best.hits == positives > 0
    assert len({e.document for e in best.examples}) == len(best.examples) >= 2
    assert all("[[ dragon]]" in e.context for e in best.examples)
    slow = [r for r in range(store.num_tokens) if store.token_text(r).strip() == "dragon"]
    assert positives == len(slow)


def test_capture_group_labels_only_its_tokens(store) -> None:
    whole = regex_token_rows(store, r"red dragon")
    group = regex_token_rows(store, r"red (dragon)")
    assert len(whole) == 2 * len(group) > 0  # a pattern spanning two tokens
    assert all(store.token_text(r).strip() == "dragon" for r in group)
    assert np.isin(group, whole).all()


def test_multi_byte_characters_align(store) -> None:
    rows = regex_token_rows(store, "本")  # one character of a two-character word
    assert len(rows) and all(store.token_text(r).strip() == "日本" for r in rows)
    rows = regex_token_rows(store, r"é\b")
    assert len(rows) and all(store.token_text(r).strip() == "café" for r in rows)


def test_thresholds_sort_and_site_filter(store) -> None:
    ranked, _ = regex_codes(store, "dragon", sites="layers.1.*", min_support=1)
    assert ranked and all(s.code.site == "layers.1.attn_heads" for s in ranked)
    ranked, _ = regex_codes(store, "dragon", min_precision=0.99, min_support=3, sort="precision")
    assert [str(s.code) for s in ranked] == [f"layers.0.mlp/0/{DRAGON}"]
    assert regex_codes(store, "unicorn") == ([], 0)
    with pytest.raises(CodebookError, match="not a valid regular expression"):
        regex_codes(store, "(dragon")
    with pytest.raises(CodebookError, match="no site matches"):
        regex_codes(store, "dragon", sites="layers.9.*")


@pytest.mark.parametrize("sort", ["f1", "precision", "recall"])
def test_ranking_equals_a_slow_scan_of_every_code(store, sort) -> None:
    from codebook_features.search import score_codes

    positive = regex_token_rows(store, r"\b(dragon|town)\b")
    ranked = score_codes(store, positive, sort=sort, top=None, examples=0, min_support=2)
    slow = []
    for site, (groups, _, num_codes) in SITES.items():
        ids = np.asarray(store.ids(site))
        for group in range(groups):
            for code in range(num_codes):
                fires = np.flatnonzero((ids[:, group] == code).any(-1))
                hits = len(np.intersect1d(fires, positive))
                if hits and len(fires) >= 2:
                    p, r = hits / len(fires), hits / len(positive)
                    f1 = 2 * p * r / (p + r)
                    key = {"f1": (f1, p, r), "precision": (p, r), "recall": (r, p)}[sort]
                    slow.append(((*(-v for v in key), site, group, code), (p, r, len(fires))))
    slow.sort(key=lambda entry: entry[0])
    assert [(s.code.site, s.code.group, s.code.code) for s in ranked] == [e[0][-3:] for e in slow]
    assert [(s.precision, s.recall, s.support) for s in ranked] == [e[1] for e in slow]


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
    root = write_store(tmp_path / "a")
    shard = next((root / "shards").glob("tokens-*.parquet"))
    shard.write_bytes(shard.read_bytes()[:100])
    with pytest.raises(CodebookError, match=r"tokens-.*\.parquet in .* is damaged"):
        CodeStore(root)
    assert not (root / "index").exists()
    root = write_store(tmp_path / "b")
    (root / "manifest.json").write_text("{truncated")
    with pytest.raises(CodebookError, match=r"manifest\.json is damaged"):
        CodeStore(root)
    with pytest.raises(CodebookError, match="not a finished code store"):
        CodeStore(tmp_path)


def test_index_is_built_once_and_rebuilt_when_the_manifest_changes(tmp_path) -> None:
    root = write_store(tmp_path / "s")
    CodeStore(root)
    stamp = (root / "index" / "index.json").stat().st_mtime_ns
    CodeStore(root)
    assert (root / "index" / "index.json").stat().st_mtime_ns == stamp
    manifest = root / "manifest.json"
    manifest.write_text(manifest.read_text() + "\n")
    again = CodeStore(root)
    assert (root / "index" / "index.json").stat().st_mtime_ns != stamp
    assert again.num_tokens > 0
    assert re.fullmatch(
        r"[0-9a-f]{64}",
        __import__("json").loads((root / "index" / "index.json").read_text())["manifest_sha256"],
    )


def test_search_command(tmp_path, capsys) -> None:
    import json

    from codebook_features.cli import main

    root = write_store(tmp_path / "store")
    assert main(["search", "regex", "--store", str(root), "--pattern", "dragon", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["codes"][0]["code"] == f"layers.0.mlp/0/{DRAGON}"
    assert result["codes"][0]["precision"] == 1.0 and result["tokens"] > 0
    assert main(["search", "regex", "--store", str(root), "--pattern", "dragon", "--top", "2"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[2].startswith(f"layers.0.mlp/0/{DRAGON} ") and len(table) == 4
    assert main(["search", "regex", "--store", str(tmp_path), "--pattern", "x"]) == 2
    assert "not a finished code store" in capsys.readouterr().err


def test_index_with_tiny_chunks_equals_one_pass(tmp_path, monkeypatch) -> None:
    from codebook_features.store import index

    one_pass = CodeStore(write_store(tmp_path / "a"))
    monkeypatch.setattr(index, "CHUNK_ROWS", 7)  # chunk boundaries inside documents and codes
    chunked = CodeStore(write_store(tmp_path / "b"))
    for site in SITES:
        assert np.array_equal(np.asarray(chunked.ids(site)), np.asarray(one_pass.ids(site)))
        for name in (index.indptr_file(site), index.rows_file(site), *index.pairs_files(site)):
            assert np.array_equal(
                np.load(tmp_path / "a" / "index" / name), np.load(tmp_path / "b" / "index" / name)
            )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m["counts"].pop("tokens"), "tokens"),
        (lambda m: m["shards"][0].pop("tokens"), "tokens"),
        (lambda m: m.__setitem__("shards", [1]), "damaged"),
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


def test_a_damaged_index_is_reported(tmp_path) -> None:
    root = write_store(tmp_path / "s")
    CodeStore(root)
    rows = root / "index" / "layers.0.mlp.rows.npy"
    rows.write_bytes(rows.read_bytes()[:20])
    with pytest.raises(CodebookError, match=r"index file .* is damaged"):
        CodeStore(root).occurrences("layers.0.mlp/0/7")


def _open_and_count(path: str) -> int:
    store = CodeStore(path)
    return int(store.counts("layers.0.mlp")[0, DRAGON])


def test_processes_opening_a_new_store_together_build_one_index(tmp_path, monkeypatch) -> None:
    import multiprocessing
    import os

    from codebook_features.store import index

    root = write_store(tmp_path / "store")
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


def test_token_overlap_by_binary_search_equals_a_scan() -> None:
    from codebook_features.search.regex import _overlapping

    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(0, 4, size=30)  # some tokens cover no character
        ends = np.cumsum(lengths)
        starts = ends - lengths
        begins = rng.integers(0, ends[-1] + 2, size=rng.integers(1, 6))
        spans = [(int(b), int(b + rng.integers(1, 8))) for b in begins]
        slow = np.zeros(30, dtype=bool)
        for begin, stop in spans:
            slow |= (ends > begin) & (starts < stop) & (ends > starts)
        assert np.array_equal(_overlapping(starts, ends, spans), slow)
        shuffled = rng.permutation(30)  # offsets out of order take the plain scan
        assert np.array_equal(_overlapping(starts[shuffled], ends[shuffled], spans), slow[shuffled])


def test_compiled_patterns_keep_their_flags(store) -> None:
    ascii_words = regex_token_rows(store, re.compile(r"\w+", re.ASCII))
    assert np.array_equal(ascii_words, regex_token_rows(store, r"(?a)\w+"))
    assert not np.array_equal(ascii_words, regex_token_rows(store, r"\w+"))  # café, 日本
    loud = regex_token_rows(store, re.compile("DRAGON", re.IGNORECASE))
    assert len(loud) and np.array_equal(loud, regex_token_rows(store, "dragon"))


def test_a_search_past_its_time_limit_is_refused(store) -> None:
    with pytest.raises(CodebookError, match="took longer than"):
        regex_token_rows(store, r"\w", time_limit=1e-9)  # cheap, but everywhere
    assert len(regex_token_rows(store, r"\w", time_limit=60))
