"""The browser's JSON API, called in-process: every answer equals what the library computes for
the same query, mistakes get a 4xx with one line, and nothing but the concepts directory is
ever written."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from codebook_features.app import ServeConfig
from codebook_features.attach.code_ref import CodeRef
from codebook_features.attach.fingerprint import codebooks_fingerprint
from codebook_features.errors import CodebookError
from codebook_features.search import regex_codes, topic_codes
from codebook_features.search.code_page import code_page
from codebook_features.search.topics import find_topics
from codebook_features.steering.concept import load_concept
from codebook_features.steering.generate import GenerationSettings, steer
from codebook_features.store.reader import CodeStore
from tests.app.conftest import make_client

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    return response.json()


def refused(response, status: int, *words: str) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail
    for word in words:
        assert word in detail
    return detail


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(directory.rglob("*"))
    }


# ---------------------------------------------------------------------- overview
def test_overview_describes_the_store_model_and_run(client, web_world) -> None:
    store = CodeStore(web_world.store)
    data = ok(client.get("/api/overview"))
    assert (data["documents"], data["tokens"]) == (store.num_documents, store.num_tokens)
    assert [s["name"] for s in data["sites"]] == list(store.sites)
    assert data["model_loaded"] and data["label_fields"] == ["topic"]
    assert data["run"]["last_metrics"]["step"] == 2 and data["run"]["plots"] == ["loss.png"]
    plot = client.get("/api/plots/loss.png")
    assert plot.status_code == 200 and plot.content.startswith(b"\x89PNG")
    refused(client.get("/api/plots/nothing.png"), 404, "no plot")
    assert client.get("/api/plots/..%2Fconfig.yaml").status_code == 404


def test_openapi_describes_every_endpoint(client) -> None:
    paths = ok(client.get("/openapi.json"))["paths"]
    for path in (
        "/api/overview",
        "/api/search/regex",
        "/api/codes/{site}/{group}/{id}",
        "/api/topics",
        "/api/documents/{document}",
        "/api/concepts",
        "/api/concepts/{name}",
        "/api/concepts/{name}/codes",
        "/api/steer",
    ):
        assert path in paths
    assert not any(p.startswith(("/search", "/codes", "/topics")) for p in paths)  # pages


# ---------------------------------------------------------------------- search
@pytest.mark.parametrize("sort", ["f1", "precision", "recall"])
def test_regex_search_equals_the_library(client, web_world, sort) -> None:
    store = CodeStore(web_world.store)
    params = {"pattern": r"\bdragon\b", "sort": sort, "top": 7, "examples": 2}
    data = ok(client.get("/api/search/regex", params=params))
    ranked, count = regex_codes(store, r"\bdragon\b", sort=sort, top=7, examples=2)
    assert data["tokens"] == count > 0
    assert [c["code"] for c in data["codes"]] == [str(s.code) for s in ranked]
    assert [c["precision"] for c in data["codes"]] == [s.precision for s in ranked]
    first = data["codes"][0]
    assert first["url"] == f"/codes/{first['code']}"
    for example in first["examples"]:
        text = store.texts[example["document"]]
        assert example["before"] + example["token"] + example["after"] in text


def test_regex_search_by_site(client) -> None:
    data = ok(client.get("/api/search/regex", params={"pattern": "cat", "sites": "layers.1.*"}))
    assert data["codes"] and all(c["code"].startswith("layers.1.") for c in data["codes"])
    refused(client.get("/api/search/regex", params={"pattern": "cat", "sites": "nope"}), 400)


def test_bad_and_pathological_patterns_get_a_400(web_world, loaded, tmp_path) -> None:
    client = make_client(web_world, tmp_path, loaded, regex_time_limit=0.2)
    refused(client.get("/api/search/regex", params={"pattern": "(dragon"}), 400, "not a valid")
    # exponential backtracking on every line: stopped by the time limit, not left running
    detail = refused(client.get("/api/search/regex", params={"pattern": r"(.|..)*\d"}), 400)
    assert "longer than 0.2 s" in detail
    assert client.get("/api/search/regex", params={"pattern": ""}).status_code == 422


# ---------------------------------------------------------------------- code pages
def test_code_page_equals_the_library(client, web_world, loaded) -> None:
    store = CodeStore(web_world.store)
    ref = regex_codes(store, "dragon", top=1)[0][0].code
    data = ok(client.get(f"/api/codes/{ref}"))
    page = code_page(store, ref, loaded[0], loaded[1])
    assert data["code"] == str(ref) and data["url"] == f"/codes/{ref}"
    assert (data["frequency"], data["documents"]) == (page.frequency, page.documents)
    assert [t["text"] for t in data["top_tokens"]] == [t.text for t in page.top_tokens]
    assert [c["code"] for c in data["cooccurring"]] == [str(c.code) for c in page.cooccurring]
    assert [c["code"] for c in data["similar"]] == [str(c.code) for c in page.similar]
    assert [t["token"] for t in data["logit_effect"]["up"]] == [t for t, _ in page.logit_effect.up]
    assert [b["count"] for b in data["positions"]] == [b.count for b in page.positions]
    assert [(x["label"], x["lift"]) for x in data["labels"]] == [
        (x.label, x.lift) for x in page.labels
    ]
    assert data["labels"] and data["labels"][0]["field"] == "topic"
    # contexts page on: the next ones, each linking to its document at its token
    later = ok(client.get(f"/api/codes/{ref}", params={"examples": 3, "offset": 2}))
    assert later["offset"] == 2
    assert [(e["document"], e["position"]) for e in later["examples"]] == [
        (e.document, e.position) for e in page.examples[2:5]
    ]
    for e in later["examples"]:
        assert e["url"] == f"/documents/{e['document']}?at={e['position']}"
        text = e["before"] + e["token"] + e["after"]
        assert [len(e["before"]), len(e["before"]) + len(e["token"])] in e["marks"]
        assert all(0 <= a < b <= len(text) for a, b in e["marks"])
    assert ok(client.get(f"/api/codes/{ref}", params={"offset": 10**9}))["examples"] == []


def test_descriptions_equal_the_library(client, web_world) -> None:
    from codebook_features.search.describe import find_descriptions

    store = CodeStore(web_world.store)
    best = ok(client.get("/api/search/descriptions", params={"top": 5}))
    expected = find_descriptions(store, top=5)
    assert best["query"] is None and [d["code"] for d in best["codes"]] == [
        str(d.code) for d in expected
    ]
    word = expected[0].text.split('"')[1].strip() if '"' in expected[0].text else "the"
    found = ok(client.get("/api/search/descriptions", params={"query": word, "min_f1": 0.1}))
    assert [d["code"] for d in found["codes"]] == [
        str(d.code) for d in find_descriptions(store, word, min_f1=0.1)
    ]
    for d in found["codes"]:
        assert d["url"] == f"/codes/{d['code']}" and d["f1"] >= 0.1 and d["kind"]
    # the code page carries the same description
    page = ok(client.get(best["codes"][0]["url"].replace("/codes/", "/api/codes/")))
    assert page["description"] == best["codes"][0]
    blank = ok(client.get("/api/search/descriptions", params={"query": "  ", "top": 5}))
    assert blank == best  # no words: the best described, as without a query
    refused(client.get("/api/search/descriptions", params={"sites": "nope"}), 400)


def test_code_page_without_model_says_what_is_missing(store_only) -> None:
    data = ok(store_only.get("/api/codes/layers.0.mlp/0/1"))
    assert data["similar"] is None and data["logit_effect"] is None
    assert any("need the model" in note for note in data["notes"])


@pytest.mark.parametrize(
    "path", ["layers.9.mlp/0/1", "layers.0.mlp/1/0", "layers.0.mlp/0/16", "nothing/0/0"]
)
def test_codes_the_store_lacks_are_404(client, path) -> None:
    refused(client.get(f"/api/codes/{path}"), 404)
    assert client.get(f"/codes/{path}").status_code == 404


def test_pages_show_markup_from_the_corpus_as_text(client) -> None:
    page = client.get("/search", params={"pattern": "script"})
    assert page.status_code == 200
    assert "<script>alert" not in page.text and "&lt;script&gt;alert" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    data = ok(client.get("/api/search/regex", params={"pattern": "script"}))
    code = data["codes"][0]["code"]
    html = client.get(f"/codes/{code}").text
    assert "<script>alert" not in html and "&lt;/script&gt;" in html


# ---------------------------------------------------------------------- topics, documents
def test_topics_equal_the_library_with_labels(client, web_world) -> None:
    store = CodeStore(web_world.store)
    params = {"min_share": 0.2, "min_documents": 2, "label": "dragon", "top": 5}
    data = ok(client.get("/api/topics", params=params))
    found = topic_codes(
        store, min_share=0.2, min_documents=2, label_field="topic", label="dragon", top=5
    )
    assert [t["code"] for t in data["codes"]] == [str(t.code) for t in found]
    assert [t["lift"] for t in data["codes"]] == [t.lift for t in found]
    assert data["label_field"] == "topic" and data["labels"] == ["dragon", "other"]
    assert data["sort"] == "precision"
    for sort in ("documents", "lift", "f1"):
        ranked = ok(client.get("/api/topics", params={**params, "sort": sort, "everywhere": 0.3}))
        found = find_topics(
            store,
            min_share=0.2,
            label_field="topic",
            label="dragon",
            sort=sort,
            everywhere=0.3,
            top=5,
        )
        assert [t["code"] for t in ranked["codes"]] == [str(t.code) for t in found.codes]
        assert [t["code"] for t in ranked["everywhere"]] == [str(t.code) for t in found.everywhere]
        assert all(t["documents"] > 0.3 * store.num_documents for t in ranked["everywhere"])
    for topic in data["codes"]:
        for doc in topic["examples"]:
            assert (
                doc["label"] in ("dragon", "other")
                and doc["url"] == f"/documents/{doc['document']}"
            )
    refused(client.get("/api/topics", params={"label": "unicorn"}), 400, "unicorn")


def test_documents(client, web_world) -> None:
    store = CodeStore(web_world.store)
    data = ok(client.get("/api/documents/3"))
    assert data["text"] == store.texts[3] and data["fields"]["topic"] in ("dragon", "other")
    assert data["tokens"] == int((store.document[:] == 3).sum())
    rows = np.flatnonzero(np.asarray(store.document) == 3)
    assert data["spans"] == [[int(store.start[r]), int(store.end[r])] for r in rows]
    refused(client.get("/api/documents/100000"), 404)
    # the codes recorded at one token, per site and group
    token = ok(client.get("/api/documents/3/tokens/2"))
    row = rows[2]
    assert token["text"] == store.token_text(row) and token["token"] == int(store.token[row])
    assert token["codes"] == {
        site: np.asarray(store.ids(site)[row]).tolist() for site in store.sites
    }
    first = next(iter(store.sites))
    only = ok(client.get("/api/documents/3/tokens/2", params={"sites": first}))
    assert list(only["codes"]) == [first]
    refused(client.get(f"/api/documents/3/tokens/{len(rows)}"), 404, "tokens")
    refused(client.get("/api/documents/100000/tokens/0"), 404)


# ---------------------------------------------------------------------- concepts
def test_documents_without_tokens_are_empty_not_another_documents(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from codebook_features.app import create_app
    from tests.app.conftest import LOCAL
    from tests.store.synthetic import write_store

    root = write_store(tmp_path / "store", empty=(5, 39))  # 39: the last document
    config = ServeConfig(store=str(root), concepts_dir=str(tmp_path / "concepts"))
    client = TestClient(create_app(config), base_url=LOCAL)
    store = CodeStore(root)
    for document in (5, 39):
        data = ok(client.get(f"/api/documents/{document}"))
        assert (data["text"], data["tokens"], data["spans"]) == ("", 0, [])
        refused(client.get(f"/api/documents/{document}/tokens/0"), 404, "has 0 tokens")
        assert client.get(f"/documents/{document}", params={"at": 0}).status_code == 200
    after = ok(client.get("/api/documents/6"))  # the next document is its own
    assert after["text"] == store.texts[6] and after["tokens"] == len(after["spans"]) > 0


def test_tokens_sharing_a_character_each_keep_a_place_of_their_own() -> None:
    from codebook_features.app.pages import cut_at_spans

    text = "ab\u65e5c"  # the CJK character in three byte tokens, all with its span
    spans = [(0, 1), (1, 2), (2, 3), (2, 3), (2, 3), (3, 4)]
    pieces = cut_at_spans(text, spans)
    assert [i for i, _ in pieces] == list(range(6))  # every token can be selected
    assert "".join(p for _, p in pieces) == text and [p for _, p in pieces][3:5] == ["", ""]
    assert cut_at_spans(" x  y ", [(1, 2), (4, 5)]) == [
        (None, " "),
        (0, "x"),
        (None, "  "),
        (1, "y"),
        (None, " "),
    ]


def test_concepts_are_made_edited_and_deleted_by_name(client, tmp_path, loaded) -> None:
    directory = tmp_path / "concepts"
    assert ok(client.get("/api/concepts")) == {"concepts": [], "writable": True, "problems": []}
    body = {"name": "dragons", "codes": ["layers.0.mlp/0/3"], "description": "fire"}
    made = client.post("/api/concepts", json=body)
    assert made.status_code == 201, made.text
    concept = load_concept(directory / "dragons.json", loaded[0])  # fits the model
    assert [str(c) for c in concept.codes] == ["layers.0.mlp/0/3"]
    assert concept.fingerprint == codebooks_fingerprint(loaded[0])
    refused(client.post("/api/concepts", json=body), 409, "exists")

    added = ok(client.post("/api/concepts/dragons/codes", json={"codes": ["layers.1.mlp/0/2"]}))
    assert added["codes"] == ["layers.0.mlp/0/3", "layers.1.mlp/0/2"]
    again = ok(client.post("/api/concepts/dragons/codes", json={"codes": ["layers.1.mlp/0/2"]}))
    assert again["codes"] == added["codes"]  # each code once

    edit = {"description": "wings", "codes": ["layers.1.mlp/0/2"], "mode": "least"}
    edited = ok(client.patch("/api/concepts/dragons", json=edit))
    assert (edited["description"], edited["codes"], edited["mode"]) == (
        "wings",
        ["layers.1.mlp/0/2"],
        "least",
    )
    assert load_concept(directory / "dragons.json").description == "wings"
    assert ok(client.get("/api/concepts/dragons")) == edited
    assert [c["name"] for c in ok(client.get("/api/concepts"))["concepts"]] == ["dragons"]

    assert ok(client.delete("/api/concepts/dragons")) == {"deleted": "dragons"}
    assert not (directory / "dragons.json").exists()
    refused(client.get("/api/concepts/dragons"), 404)


def test_adding_codes_makes_the_concept(client, tmp_path) -> None:
    made = ok(client.post("/api/concepts/cats/codes", json={"codes": ["layers.0.mlp/0/1"]}))
    assert made["codes"] == ["layers.0.mlp/0/1"] and made["fits_model"] is True
    assert (tmp_path / "concepts" / "cats.json").is_file()


@pytest.mark.parametrize(
    ("codes", "status"),
    [(["layers.0.mlp/0/99"], 400), (["not a code"], 400), (["layers.7.mlp/0/1"], 400)],
)
def test_codes_the_model_lacks_are_refused(client, tmp_path, codes, status) -> None:
    refused(client.post("/api/concepts", json={"name": "x", "codes": codes}), status)
    assert not (tmp_path / "concepts" / "x.json").exists()


def test_files_that_are_not_concepts_are_never_touched(client, tmp_path) -> None:
    directory = tmp_path / "concepts"
    directory.mkdir()
    other = directory / "notes.json"
    other.write_text('{"mine": true}\n')
    (directory / "broken.json").write_text('{"kind": "concept", "name": 3}\n')
    listing = ok(client.get("/api/concepts"))
    assert listing["concepts"] == [] and "broken.json" in listing["problems"][0]
    refused(
        client.post("/api/concepts", json={"name": "notes", "codes": ["layers.0.mlp/0/1"]}), 409
    )
    refused(client.patch("/api/concepts/notes", json={"description": "x"}), 404)
    refused(client.delete("/api/concepts/notes"), 404)
    assert other.read_text() == '{"mine": true}\n'
    for name in ["..", ".", "a b", "x%2Fy"]:
        assert client.delete(f"/api/concepts/{name}").status_code in (400, 404, 405, 422)
    assert sorted(p.name for p in directory.iterdir()) == ["broken.json", "notes.json"]


def test_without_the_model_concepts_are_read_but_not_made(store_only, client) -> None:
    ok(client.post("/api/concepts/cats/codes", json={"codes": ["layers.0.mlp/0/1"]}))
    listing = ok(store_only.get("/api/concepts"))  # the same directory, read without the model
    assert listing["writable"] is False and [c["name"] for c in listing["concepts"]] == ["cats"]
    assert ok(store_only.get("/api/concepts/cats"))["fits_model"] is None
    refused(
        store_only.post("/api/concepts", json={"name": "c", "codes": ["layers.0.mlp/0/1"]}),
        409,
        "--model",
    )
    refused(
        store_only.post("/api/steer", json={"prompt": "the", "codes": ["layers.0.mlp/0/1"]}),
        409,
        "--model",
    )


def test_the_store_is_never_written(client, web_world) -> None:
    before = snapshot(web_world.store)
    ok(client.get("/api/overview"))
    ok(client.get("/api/search/regex", params={"pattern": "king"}))
    ok(client.get("/api/codes/layers.0.mlp/0/1"))
    ok(client.get("/api/topics"))
    ok(client.post("/api/concepts/k/codes", json={"codes": ["layers.0.mlp/0/1"]}))
    assert snapshot(web_world.store) == before


# ---------------------------------------------------------------------- steering
def test_steering_equals_the_library(client, loaded, tmp_path) -> None:
    ok(client.post("/api/concepts/cats/codes", json={"codes": ["layers.1.mlp/0/4"]}))
    body = {
        "prompt": "the red cat",
        "concept": "cats",
        "generation": {"max_new_tokens": 6, "samples": 2, "seed": 3},
    }
    data = ok(client.post("/api/steer", json=body))
    concept = load_concept(tmp_path / "concepts" / "cats.json", loaded[0])
    settings = GenerationSettings(max_new_tokens=6, samples=2, seed=3)
    expected = steer(loaded[0], loaded[1], "the red cat", concept.force_specs(), settings)
    assert [s["unsteered"] for s in data["samples"]] == expected.unsteered
    assert [s["steered"] for s in data["samples"]] == expected.steered
    assert [s["seed"] for s in data["samples"]] == expected.seeds
    assert data["steering"] == ["force layers.1.mlp/0/4 (mode all, positions new)"]
    assert data["stopped_early"] is False


def test_steering_is_bounded(web_world, loaded, tmp_path) -> None:
    client = make_client(web_world, tmp_path, loaded, max_new_tokens=10, max_samples=2)
    body = {"prompt": "the red cat", "codes": ["layers.1.mlp/0/4"]}
    refused(
        client.post("/api/steer", json=body | {"generation": {"max_new_tokens": 11}}),
        400,
        "at most 10",
    )
    three = {"generation": {"samples": 3, "max_new_tokens": 5}}
    refused(client.post("/api/steer", json=body | three), 400, "at most 2")
    assert client.post("/api/steer", json=body | {"max_new_tokens": 2}).status_code == 422
    refused(client.post("/api/steer", json=body | {"concept": "../x"}), 400)
    refused(client.post("/api/steer", json=body | {"concept": "nothing"}), 404)
    assert client.post("/api/steer", json=body | {"file": "/etc/passwd"}).status_code == 422
    browser = client.app.state.browser
    with browser._generating:  # another generation is running
        refused(client.post("/api/steer", json=body), 429, "try again")
    ok(client.post("/api/steer", json=body | {"generation": {"max_new_tokens": 2}}))
    ok(client.post("/api/steer", json=body))  # the default settings fit the server's limits


def test_generation_stops_at_its_time_limit(web_world, loaded, tmp_path) -> None:
    client = make_client(web_world, tmp_path, loaded, generation_time_limit=1e-6)
    body = {
        "prompt": "the red cat",
        "codes": ["layers.1.mlp/0/4"],
        "generation": {"max_new_tokens": 50},
    }
    data = ok(client.post("/api/steer", json=body))
    assert data["stopped_early"] is True
    assert all(len(s["steered"].split()) < 50 for s in data["samples"])


# ---------------------------------------------------------------------- settings
def test_serve_settings_are_checked() -> None:
    assert not ServeConfig(store="s").exposed
    assert not ServeConfig(store="s", host="::1").exposed
    assert ServeConfig(store="s", host="0.0.0.0").exposed
    for bad in ({"store": ""}, {"store": "s", "port": 0}, {"store": "s", "regex_time_limit": 0}):
        with pytest.raises(CodebookError):
            ServeConfig(**bad)


def test_a_code_url_is_its_reference(client) -> None:
    ref = CodeRef("layers.1.attn_heads", 2, 5)
    assert ok(client.get(f"/api/codes/{ref}"))["url"] == f"/codes/{ref}"
    assert client.get(f"/codes/{ref}").status_code == 200
    assert os.fspath(str(ref)) in client.get(f"/codes/{ref}").text
    json.dumps(ok(client.get("/api/overview")))  # plain JSON


def test_pages_answer_bad_form_values_with_a_page(client) -> None:
    page = client.get("/search", params={"pattern": "cat", "top": "x"})
    assert page.status_code == 422 and page.headers["content-type"].startswith("text/html")
    assert "check the form: top:" in page.text
    api = client.get("/api/search/regex", params={"pattern": "cat", "top": "x"})
    assert api.status_code == 422 and api.json()["detail"][0]["loc"] == ["query", "top"]


def test_only_local_names_and_json_bodies_are_answered(client, web_world, tmp_path) -> None:
    assert client.get("/api/overview", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/overview", headers={"Host": "localhost:8000"}).status_code == 200
    form = client.post("/api/concepts", content=b"name=x", headers={"Content-Type": "text/plain"})
    refused(form, 415, "JSON")
    assert client.get("/docs").status_code == 404  # it would load its code from a CDN
    exposed = make_client(web_world, tmp_path, None, host="0.0.0.0")
    assert exposed.get("/api/overview", headers={"Host": "10.0.0.7:8000"}).status_code == 200


def test_a_concept_file_must_bear_its_concept_name(client, tmp_path) -> None:
    ok(client.post("/api/concepts/a/codes", json={"codes": ["layers.0.mlp/0/1"]}))
    directory = tmp_path / "concepts"
    (directory / "b.json").write_text((directory / "a.json").read_text())
    detail = refused(client.patch("/api/concepts/b", json={"description": "x"}), 409, "b.json")
    assert "holds the concept 'a'" in detail and str(directory) not in detail
    assert load_concept(directory / "a.json").description == ""  # a.json was not touched
    listing = ok(client.get("/api/concepts"))
    assert [c["name"] for c in listing["concepts"]] == ["a"] and "b.json" in listing["problems"][0]


def test_concurrent_saves_to_one_concept_keep_every_code(client, tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    ok(client.post("/api/concepts/many/codes", json={"codes": ["layers.0.mlp/0/0"]}))
    codes = [  # two codes per head (k = 2 fit a force in every slot)
        f"layers.{layer}.attn_heads/{head}/{code}"
        for layer in (0, 1)
        for head in range(4)
        for code in (1, 2)
    ]

    def save(code: str) -> int:
        return client.post("/api/concepts/many/codes", json={"codes": [code]}).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(save, codes)) == {200}
    saved = load_concept(tmp_path / "concepts" / "many.json").codes
    assert sorted(map(str, saved)) == sorted(["layers.0.mlp/0/0", *codes])


# ---------------------------------------------------------------------- hostile and odd input
HOSTILE_BODIES = [
    b'{"prompt": "the", "codes": ["layers.0.mlp/0/1"], "alpha": NaN, "temperature": NaN}',
    b'{"prompt": "the", "codes": [Infinity], "max_new_tokens": -Infinity}',
    b'{"name": "\\ud800", "codes": ["\\ud800"], "description": "\\ud800"}',
    b'{"name": "x", "codes": [' + b'"' + b"a" * 5_000_000 + b'"]}',
    b'{"name": "x", "codes": [' + b",".join([b"1"] * 100_000) + b"]}",
    b'{"\\ud800": 1, "prompt": "the", "name": "x", "codes": []}',
    b'{"' + b"k" * 5_000_000 + b'": 1, "prompt": "the", "name": "x", "codes": []}',
]


@pytest.mark.parametrize(
    "body",
    HOSTILE_BODIES,
    ids=["nan", "inf", "surrogate", "5mb", "many", "surrogate-key", "5mb-key"],
)
def test_hostile_bodies_get_a_short_answer(client, body) -> None:
    ok(client.post("/api/concepts/x/codes", json={"codes": ["layers.0.mlp/0/1"]}))
    headers = {"Content-Type": "application/json"}
    for method, path in (
        ("POST", "/api/steer"),
        ("POST", "/api/concepts"),
        ("POST", "/api/concepts/x/codes"),
        ("PATCH", "/api/concepts/x"),
    ):
        response = client.request(method, path, content=body, headers=headers)
        assert response.status_code < 500, (method, path, response.text[:300])
        if response.status_code >= 400:
            assert len(response.content) < 8_000, (method, path, len(response.content))
            response.json()  # JSON that says where, without echoing the input


def test_an_unknown_page_is_the_sites_error_page(client) -> None:
    page = client.get("/no/such/page")
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "Error 404" in page.text
    api = client.get("/api/no/such/thing")
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}


def test_its_own_loopback_address_is_answered(web_world, tmp_path) -> None:
    client = make_client(web_world, tmp_path / "c", None, host="127.0.0.2")
    assert client.get("/api/overview", headers={"Host": "127.0.0.2:8000"}).status_code == 200
    assert client.get("/api/overview", headers={"Host": "evil.example"}).status_code == 400


def test_a_concepts_dir_that_is_a_file_is_refused_at_start(web_world, tmp_path) -> None:
    afile = tmp_path / "concepts.txt"
    afile.write_text("mine\n")
    with pytest.raises(CodebookError, match="is a file: give a directory"):
        make_client(web_world, afile, None)
    assert afile.read_text() == "mine\n"


def test_a_concept_of_another_model_is_read_but_not_changed(client, tmp_path) -> None:
    ok(client.post("/api/concepts/mine/codes", json={"codes": ["layers.0.mlp/0/1"]}))
    path = tmp_path / "concepts" / "mine.json"
    data = json.loads(path.read_text())
    data["fingerprint"] = "0" * len(data["fingerprint"])
    path.write_text(json.dumps(data))
    before = path.read_text()
    page = client.get("/concepts/mine")
    assert page.status_code == 200 and "made for another model" in page.text
    assert 'id="concept-edit"' not in page.text and 'id="concept-delete"' not in page.text
    refused(client.delete("/api/concepts/mine"), 409, "another model")
    refused(client.patch("/api/concepts/mine", json={"description": "x"}), 409, "another model")
    assert path.read_text() == before
    ok(client.post("/api/concepts/own/codes", json={"codes": ["layers.0.mlp/0/1"]}))
    for url in ("/steer", "/codes/layers.0.mlp/0/1"):  # not offered where it would be refused
        text = client.get(url).text
        assert '<option value="own"' in text and '<option value="mine"' not in text, url


def test_option_values_keep_their_spaces(client) -> None:
    """A select's option without a value sends its text with whitespace collapsed: every
    option names its value."""
    import re

    ok(client.post("/api/concepts/x/codes", json={"codes": ["layers.0.mlp/0/1"]}))
    for path in ("/search", "/topics", "/steer", "/concepts/x"):
        html = client.get(path).text
        options = re.findall(r"<option[^>]*>", html)
        assert options, path
        assert all("value=" in o for o in options), (path, options)


def test_a_concept_name_with_a_final_newline_is_refused(client, tmp_path) -> None:
    body = {"codes": ["layers.0.mlp/0/1"]}
    refused(client.post("/api/concepts/abc%0A/codes", json=body), 400, "only letters")
    assert client.post("/api/concepts", json={"name": "abc\n", **body}).status_code == 422
    directory = tmp_path / "concepts"
    assert not directory.exists() or not list(directory.iterdir())


# ---------------------------------------------------------------------- your own text
def test_your_text_equals_the_library(client, store_only, loaded) -> None:
    from codebook_features.search.text_codes import text_codes

    data = ok(client.post("/api/text", json={"text": "the red cat sees a dragon"}))
    expected = text_codes(loaded[0], loaded[1], "the red cat sees a dragon")
    assert data["tokens"] == [t.to_dict() for t in expected]
    assert data["sites"] == list(expected[0].codes)
    some = ok(client.post("/api/text", json={"text": "the red cat", "sites": "layers.1.*"}))
    assert some["sites"] and all(s.startswith("layers.1.") for s in some["sites"])
    refused(client.post("/api/text", json={"text": "the cat", "sites": "nope"}), 400, "nope")
    refused(client.post("/api/text", json={"text": "   "}), 400, "give a text")
    assert client.post("/api/text", json={"text": "x" * 4001}).status_code == 422
    assert client.post("/api/text", json={"text": "a", "other": 1}).status_code == 422
    refused(store_only.post("/api/text", json={"text": "the cat"}), 409, "--model")
    page = client.get("/text", params={"text": "the red cat", "sites": "layers.1.mlp", "group": 0})
    assert page.status_code == 200
    first = expected[0].codes["layers.1.mlp"][0][0]
    assert f'href="/codes/layers.1.mlp/0/{first}"' in page.text
    assert store_only.get("/text", params={"text": "the cat"}).status_code == 409
    for odd in ({"group": "\u00b2"}, {"at": "\u00b2"}, {"at": "9999999999"}, {"text": "  "}):
        page = client.get("/text", params={"text": "the cat"} | odd)
        assert page.status_code == 400 and 'class="error"' in page.text, odd


def test_your_text_is_refused_past_the_codes_a_page_shows(client, monkeypatch) -> None:
    from codebook_features.app import browser

    monkeypatch.setattr(browser, "MAX_TEXT_CODES", 10)
    refused(client.post("/api/text", json={"text": "the red cat"}), 400, "fewer sites")


def test_next_tokens_equal_the_library(client, store_only, loaded) -> None:
    from markupsafe import escape

    from codebook_features.search.text_codes import next_tokens

    text = "the red cat sees a dragon"
    data = ok(client.post("/api/text/next", json={"text": text}))
    plain, _ = next_tokens(loaded[0], loaded[1], text)
    assert data == {"plain": [t.to_dict() for t in plain], "changed": None}
    body = {"text": text, "force": ["layers.1.mlp/0/3"], "ablate": [], "position": 1}
    data = ok(client.post("/api/text/next", json=body | {"mode": "least"}))
    _, changed = next_tokens(
        loaded[0], loaded[1], text, force=["layers.1.mlp/0/3"], position=1, mode="least"
    )
    assert data["changed"] == [t.to_dict() for t in changed]
    refused(client.post("/api/text/next", json=body | {"position": 99}), 400, "not a token")
    refused(client.post("/api/text/next", json=body | {"force": ["nope/0/1"]}), 400, "nope")
    refused(store_only.post("/api/text/next", json={"text": text}), 409, "--model")
    page = client.get("/text", params={"text": text, "force": "layers.1.mlp/0/3", "at": "1"})
    assert page.status_code == 200 and "next-changed" in page.text
    assert str(escape(changed[0].text)) in page.text  # as the template escapes it
    bad = client.get("/text", params={"text": text, "force": "layers.1.mlp/0/999"})
    assert bad.status_code == 400 and 'class="error"' in bad.text


def test_a_concept_saved_with_codes_takes_its_mode(client) -> None:
    # k = 2: in modes all and least a head takes two codes, so a third is refused; add takes more
    codes = [f"layers.1.mlp/0/{i}" for i in (2, 3, 4)]
    made = ok(client.post("/api/concepts/heads/codes", json={"codes": codes[:2]}))
    assert made["mode"] == "all"
    refused(client.post("/api/concepts/heads/codes", json={"codes": codes[2:]}), 400, "add")
    more = ok(client.post("/api/concepts/heads/codes", json={"codes": codes[2:], "mode": "add"}))
    assert (more["mode"], more["codes"]) == ("add", codes)
    new = ok(client.post("/api/concepts/one/codes", json={"codes": codes[:1], "mode": "least"}))
    assert (new["mode"], new["codes"]) == ("least", codes[:1])
    bad = client.post("/api/concepts/x/codes", json={"codes": codes, "mode": "nope"})
    assert bad.status_code == 422
