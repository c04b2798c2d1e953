"""Automatic code descriptions against a slow, obvious reference (plain loops over rows and
codes), on stores with planted codes whose right description is known."""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from codebook_features import CodebookError
from codebook_features.attach.code_ref import CodeRef
from codebook_features.persist.checksums import file_sha256
from codebook_features.persist.files import MANIFEST, SHARDS_DIR
from codebook_features.search.describe import describe_codes, find_descriptions, term_words
from codebook_features.search.tokens import token_texts
from codebook_features.store import key_sets
from codebook_features.store.descriptions import (
    KINDS,
    SHAPES,
    START,
    describe_table,
    descriptions_from_table,
)
from codebook_features.store.reader import CodeStore
from tests.store.synthetic import DRAGON, SITES, WORDS, reindex, write_store

RED, DAWN, TOWN = (WORDS.index(w) for w in ("red", "dawn", "town"))
DRAGON_REF = CodeRef("layers.0.mlp", 0, DRAGON)
"""Fires exactly on the word "dragon" (planted by ``write_store``)."""
ODD_TOWN = 99
"""The token id "town" gets in documents with an odd id (held out): a key the fit never sees."""
AFTER_RED = CodeRef("layers.1.attn_heads", 0, 3)
"""Fires on every token that follows "red" in its document."""
RANDOM = CodeRef("layers.1.attn_heads", 1, 4)
"""Fires on 5% of the tokens, at random."""
ODD_ONLY = CodeRef("layers.1.attn_heads", 1, 8)
"""Fires only on the held-out key ``ODD_TOWN``: never on a fit row."""
DAWN_CODE = CodeRef("layers.0.mlp", 0, 6)
"""Fires on "dawn" everywhere and on ``ODD_TOWN``, which the fit cannot see."""


# ---------------------------------------------------------------------- stores
def rewrite_tokens(root: Path, change) -> None:
    """Edit the token shards' columns in place (``change(columns, codes)`` on numpy arrays
    per shard), record their new checksums and rebuild the index."""
    manifest = json.loads((root / MANIFEST).read_text())
    for shard in manifest["shards"]:
        path = root / SHARDS_DIR / shard["tokens"]
        table = pq.read_table(path)
        plain = [n for n in table.column_names if n not in SITES]
        columns = {n: table.column(n).to_numpy().copy() for n in plain}
        codes = {
            site: table.column(site)
            .combine_chunks()
            .flatten()
            .to_numpy()
            .reshape(table.num_rows, -1)
            for site in SITES
        }
        codes = {site: values.copy() for site, values in codes.items()}
        change(columns, codes)
        new = {n: pa.array(columns[n], table.schema.field(n).type) for n in plain}
        for site, values in codes.items():
            kind = table.schema.field(site).type
            flat = pa.array(values.reshape(-1), kind.value_type)
            new[site] = pa.FixedSizeListArray.from_arrays(flat, kind.list_size)
        pq.write_table(pa.table(new), path)
        manifest["files"][f"{SHARDS_DIR}/{shard['tokens']}"] = file_sha256(path)
    (root / MANIFEST).write_text(json.dumps(manifest))
    reindex(root)


def plant(columns: dict, codes: dict) -> None:
    doc, tok = columns["document"], columns["token"]
    tok[(doc % 2 == 1) & (tok == TOWN)] = ODD_TOWN
    after_red = np.r_[False, (tok[:-1] == RED) & (doc[1:] == doc[:-1])]
    heads, mlp = codes["layers.1.attn_heads"], codes["layers.0.mlp"]  # slots: group * k + i
    heads[after_red, 0] = AFTER_RED.id
    rng = np.random.default_rng(int(doc[0]))
    heads[rng.random(len(tok)) < 0.05, 1] = RANDOM.id
    heads[tok == ODD_TOWN, 1] = ODD_ONLY.id
    mlp[(tok == DAWN) | (tok == ODD_TOWN), 0] = DAWN_CODE.id


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> CodeStore:
    root = write_store(tmp_path_factory.mktemp("describe") / "store", 200, 70)
    rewrite_tokens(root, plant)
    return CodeStore(root)


# ---------------------------------------------------------------------- the reference
def shape(text: str) -> int:
    """The first of the shapes' regexes the text matches, by a plain loop."""
    for i, (_, regex) in enumerate(SHAPES):
        if re.search(regex, text):
            return i
    return len(SHAPES)


def slow_describe(store: CodeStore, max_terms: int = 8, min_count: int = 2) -> list[tuple]:
    """Each code's (code, kind, terms, precision, recall, f1, support, fit_support), by
    counting row by row and trying every prefix of every code's sorted candidates."""
    texts = token_texts(store)
    token, document = store.token.tolist(), store.document.tolist()
    prev = [token[r - 1] if r and document[r - 1] == document[r] else -1 for r in range(len(token))]
    keys = {
        "token": token,
        "word": [texts[t].strip().casefold() or texts[t] for t in token],
        "shape": [shape(texts[t]) for t in token],
        "after": prev,
        "pair": list(zip(prev, token, strict=True)),
    }

    def term(kind: str, key) -> str:
        if kind in ("token", "word"):
            return texts[key] if kind == "token" else key
        if kind == "shape":
            return [name for name, _ in SHAPES][key] if key < len(SHAPES) else "other"
        if kind == "after":
            return START if key == -1 else texts[key]
        pair = [texts[key[0]] if key[0] != -1 else None, texts[key[1]]]
        return json.dumps(pair, ensure_ascii=False)

    out = []
    for site, info in store.sites.items():
        ids = np.asarray(store.ids(site)).tolist()
        for group in range(info.groups):
            fires = [{i for i in row[group] if i >= 0} for row in ids]
            # per half (True: fit): rows per code, rows per key, rows per (code, key)
            n, b, a = defaultdict(Counter), defaultdict(Counter), defaultdict(Counter)
            for kind in KINDS:
                for r, key in enumerate(keys[kind]):
                    half = document[r] % 2 == 0
                    b[kind, half][key] += 1
                    for code in fires[r]:
                        a[kind, half][code, key] += 1
            for r, codes in enumerate(fires):
                n[document[r] % 2 == 0].update(codes)
            by_code = defaultdict(lambda: defaultdict(list))
            for kind in KINDS:
                for (code, key), count in a[kind, True].items():
                    if count >= min_count:
                        by_code[code][kind].append((key, count, b[kind, True][key]))
            for code in range(info.num_codes):
                best = (0.0, "", [])
                for kind in KINDS:
                    candidates = sorted(
                        by_code[code][kind], key=lambda t: (-t[1] / t[2], -t[1], t[0])
                    )
                    for size in range(1, min(max_terms, len(candidates)) + 1):
                        chosen = candidates[:size]
                        hits = sum(c for _, c, _ in chosen)
                        f1 = 2 * hits / (sum(r for *_, r in chosen) + n[True][code])
                        if f1 > best[0]:
                            best = (f1, kind, [key for key, *_ in chosen])
                _, kind, chosen = best
                support = n[False][code]
                if not kind:
                    out.append(
                        (f"{site}/{group}/{code}", "", [], *[math.nan] * 3, support, n[True][code])
                    )
                    continue
                predicted = sum(b[kind, False][key] for key in chosen)
                hits = sum(a[kind, False][code, key] for key in chosen)
                precision = hits / predicted if predicted else math.nan
                recall = hits / support if support else math.nan
                total = predicted + support
                f1 = 2 * hits / total if total else math.nan
                terms = [term(kind, key) for key in chosen]
                out.append(
                    (
                        f"{site}/{group}/{code}",
                        kind,
                        terms,
                        precision,
                        recall,
                        f1,
                        support,
                        n[True][code],
                    )
                )
    return out


def fast(descriptions) -> list[tuple]:
    return [
        (str(d.code), d.kind, d.terms, d.precision, d.recall, d.f1, d.support, d.fit_support)
        for d in descriptions
    ]


def same(a: list[tuple], b: list[tuple]) -> bool:
    """Equal, NaN equal to NaN (no tolerance: the same integer ratios)."""
    nan = "nan"
    clean = [tuple(nan if isinstance(v, float) and math.isnan(v) else v for v in row) for row in a]
    other = [tuple(nan if isinstance(v, float) and math.isnan(v) else v for v in row) for row in b]
    return clean == other


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize(("max_terms", "min_count"), [(8, 2), (3, 1), (1, 3)])
def test_fast_descriptions_equal_the_slow_reference(planted, max_terms, min_count) -> None:
    slow = slow_describe(planted, max_terms, min_count)
    assert same(fast(describe_codes(planted, max_terms=max_terms, min_count=min_count)), slow)
    assert sum(1 for row in slow if row[1]) > 50  # many codes are described


def test_the_sorting_path_equals_the_dense_one(planted, monkeypatch) -> None:
    dense = fast(describe_codes(planted))
    monkeypatch.setattr(key_sets, "DENSE_COUNTS", 0)  # every kind counted by sorting
    assert same(fast(describe_codes(planted)), dense)


def test_the_index_keeps_the_descriptions(planted) -> None:
    assert same(fast(describe_codes(planted)), slow_describe(planted))
    table = planted.descriptions
    assert same(fast(describe_codes(planted)), fast(descriptions_from_table(table)))
    info = json.loads((planted.path / "index" / "index.json").read_text())
    assert "descriptions.parquet" in info["files"]  # checksummed like every index file
    assert planted.description(str(DRAGON_REF)) == describe_codes(planted, "layers.0.mlp")[DRAGON]
    with pytest.raises(CodebookError, match="not in this store"):
        planted.description("layers.0.mlp/0/50")
    # and SQL reads them beside the shards
    kinds = dict(planted.sql("select kind, count(*) from descriptions group by kind").fetchall())
    assert kinds == dict(Counter(table.column("kind").to_pylist()))
    ((text,),) = planted.sql(
        f"select text from descriptions where code = '{DRAGON_REF}'"
    ).fetchall()
    assert text == planted.description(DRAGON_REF).text


def test_planted_codes_get_their_description(planted) -> None:
    texts = token_texts(planted)
    dragon = planted.description(DRAGON_REF)
    assert (dragon.kind, dragon.terms) == ("token", [texts[WORDS.index("dragon")]])
    assert (dragon.precision, dragon.recall, dragon.f1) == (1.0, 1.0, 1.0)
    assert dragon.text == f"token {json.dumps(texts[WORDS.index('dragon')])}"
    after = planted.description(AFTER_RED)
    assert (after.kind, after.terms, after.f1) == ("after", [texts[RED]], 1.0)
    assert after.text == f"after {json.dumps(texts[RED])}"
    assert planted.description(RANDOM).f1 < 0.3  # nothing predicts it on held-out documents


def test_a_code_of_a_token_class_is_described_by_its_shape() -> None:
    # 40 documents of words and 20 different numbers; one code fires on every number (more
    # distinct tokens than a description may list), another on the word " cat"
    rng = np.random.default_rng(0)
    pieces = {0: " the", 1: " cat", 2: " sat", 3: "\n", **{4 + n: f" {n * 7}" for n in range(20)}}
    token = rng.integers(0, len(pieces), 4000)
    document = np.repeat(np.arange(40), 100)
    ids = np.full((len(token), 1, 2), 9, dtype=np.int16)  # code 9 fires everywhere, slot 0
    ids[:, 0, 1] = np.where(token >= 4, 0, np.where(token == 1, 1, 2))
    table = describe_table(token, document, pieces, {"s": (ids, 10)})
    found = {d.code.id: d for d in descriptions_from_table(table)}
    assert (found[0].kind, found[0].terms, found[0].f1) == ("shape", ["number"], 1.0)
    assert found[0].text == "shape number"
    assert (found[1].kind, found[1].terms, found[1].f1) == ("token", [" cat"], 1.0)


def test_descriptions_come_from_fit_documents_only(planted) -> None:
    texts = token_texts(planted)
    dawn = planted.description(DAWN_CODE)
    assert (dawn.kind, dawn.terms) == ("token", [texts[DAWN]])  # never the held-out "town"
    assert dawn.precision == 1.0 and dawn.recall < 1.0  # it misses the held-out town rows
    odd = planted.description(ODD_ONLY)
    assert (odd.fit_support, odd.kind, odd.terms, odd.text) == (0, "", [], "")
    assert odd.support > 0 and math.isnan(odd.f1)  # fires, but only where nothing is fitted
    silent = planted.description("layers.0.mlp/0/0")
    assert (silent.fit_support, silent.support, silent.kind) == (0, 0, "")
    rare = [
        d for d in descriptions_from_table(planted.descriptions) if d.fit_support and not d.kind
    ]
    assert rare and all(math.isnan(d.f1) for d in rare)  # fires, but no key repeats


def test_words_fold_case_and_texts_show_spaces() -> None:
    pieces = {0: " Ship", 1: "ship", 2: " SHIP", 3: " boat", 4: "\n", 5: " the"}
    rows = [5, 0, 3, 1, 4, 2, 3, 5, 1, 4, 3, 0, 5, 2, 4]
    token = np.array(rows * 4)
    document = np.repeat(np.arange(4), len(rows))
    ships = np.isin(token, [0, 1, 2])
    ids = np.stack([np.where(ships, 1, -1), np.where(token == 4, 2, -1)], axis=1)
    # three tokens read "ship": two terms cover them as one word, not as tokens
    table = describe_table(token, document, pieces, {"s": (ids[:, None, :], 3)}, max_terms=2)
    by_code = {row["id"]: row for row in table.to_pylist()}
    assert by_code[1]["kind"] == "word" and by_code[1]["terms"] == ["ship"]
    assert by_code[1]["text"] == "word ship" and by_code[1]["f1"] == 1.0
    assert by_code[2]["text"] == r'token "\n"' and by_code[2]["terms"] == ["\n"]
    assert by_code[0]["kind"] == "" and by_code[0]["fit_support"] == 0
    with pytest.raises(CodebookError, match="max_terms must be a whole number >= 1"):
        describe_table(token, document, pieces, {}, max_terms=0)


def test_pairs_and_starts_read_clearly() -> None:
    pieces = {0: "The", 1: " of", 2: " the", 3: " cat"}
    rows = [0, 3, 1, 2, 3, 1, 3, 0, 2]
    token = np.array(rows * 4)
    document = np.repeat(np.arange(4), len(rows))
    first = np.r_[True, document[1:] != document[:-1]]
    of_the = np.r_[False, (token[:-1] == 1) & (token[1:] == 2)]
    ids = np.stack([np.where(first, 0, -1), np.where(of_the, 1, -1)], axis=1)[:, None, :]
    rows_ = {
        r["id"]: r for r in describe_table(token, document, pieces, {"s": (ids, 2)}).to_pylist()
    }
    assert rows_[0]["text"] == f"after {START}" and rows_[0]["terms"] == [START]
    assert rows_[1]["kind"] == "pair" and rows_[1]["text"] == 'pair " of" → " the"'
    assert [json.loads(t) for t in rows_[1]["terms"]] == [[" of", " the"]]
    assert term_words("pair", rows_[1]["terms"]) == ["of", "the"]
    assert term_words("after", [START, " Ship"]) == ["ship"]


def test_find_descriptions_by_words(planted) -> None:
    for query in ("dragon", "DRAGON", "dragons", "codes about dragons", "dragon?"):
        found = find_descriptions(planted, query)
        assert found[0].code == DRAGON_REF, query
        # those holding the word itself first, then its inflections; each by F1
        exact = ["dragon" in term_words(d.kind, d.terms) for d in found]
        assert exact == sorted(exact, reverse=True), query
        for group in (True, False):
            f1s = [d.f1 for d, e in zip(found, exact, strict=True) if e is group]
            assert f1s == sorted(f1s, reverse=True), query
    for near_miss in ("drag", "dr", "dragonfly"):  # not inflections of the word
        assert all(d.code != DRAGON_REF for d in find_descriptions(planted, near_miss))
    # several words: codes matching more of them come first
    both = find_descriptions(planted, "red dragon", top=50)
    matched = [len({"red", "dragon"} & set(term_words(d.kind, d.terms))) for d in both]
    assert matched == sorted(matched, reverse=True)
    assert {DRAGON_REF, AFTER_RED} <= {d.code for d in both}
    assert find_descriptions(planted, "red", min_f1=0.99)[0].code == AFTER_RED
    assert find_descriptions(planted, "dragon", sites="layers.1.*", top=50)
    assert all(
        d.code.site == "layers.1.attn_heads"
        for d in find_descriptions(planted, "dragon", sites="layers.1.*")
    )
    best = find_descriptions(planted, top=3)
    assert len(best) == 3 and best[0].f1 == 1.0
    assert find_descriptions(planted, "unicorn") == []
    with pytest.raises(CodebookError, match="the query is empty"):
        find_descriptions(planted, "  ")
    with pytest.raises(CodebookError, match="min_f1 must be between 0 and 1"):
        find_descriptions(planted, "red", min_f1=1.5)


def test_describe_command(planted, capsys) -> None:
    from codebook_features.cli import main

    root = str(planted.path)
    assert main(["search", "describe", "--store", root, "--query", "dragon", "--json"]) == 0
    codes = json.loads(capsys.readouterr().out)["codes"]
    assert codes[0]["code"] == str(DRAGON_REF) and codes[0]["f1"] == 1.0
    assert main(["search", "describe", "--store", root, "--query", "red", "--min_f1", "0.9"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:2] == ["code", "f1"] and table[1].startswith(f"{AFTER_RED} ")
    assert main(["search", "describe", "--store", root, "--query", "unicorn"]) == 0
    assert (
        capsys.readouterr().out == "no code matches 'unicorn' with a held-out F1 of at least 0.0\n"
    )
    assert main(["search", "describe", "--store", root, "--top", "2"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert main(["search", "describe", "--store", root, "--min_f1", "2"]) == 2
    assert "min_f1: input should be less than or equal to 1" in capsys.readouterr().err
    assert main(["search", "describe", "--store", root, "--query", " "]) == 2
    assert (
        capsys.readouterr().err
        == "error: give words to look for in the descriptions (the query is empty)\n"
    )


def test_an_old_or_damaged_index_is_refused(tmp_path) -> None:
    from tests.store.test_reader import flip

    root = write_store(tmp_path / "s")
    path = root / "index" / "descriptions.parquet"
    flip(path, len(path.read_bytes()) // 2)
    with pytest.raises(
        CodebookError, match=r"descriptions\.parquet in .* is damaged.*codebook index"
    ):
        _ = CodeStore(root).descriptions
    info = root / "index" / "index.json"
    old = json.loads(info.read_text()) | {"index_version": 4}
    info.write_text(json.dumps(old))
    with pytest.raises(CodebookError, match=r"no current index .*codebook index --store"):
        CodeStore(root)
