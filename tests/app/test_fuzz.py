"""Fuzz of the browser's JSON API (and, lightly, its pages), with and without the model. Two
kinds, both bounded and reproducible (derandomized):

- schema-driven: schemathesis draws requests (valid and invalid) for every operation that
  ``/openapi.json`` describes, and checks each answer: never a 5xx, and an answer that matches
  its documented schema (status, content type, body);
- domain-aware: sequences of requests built from what the store really holds (its sites, codes,
  documents and label fields) mixed with near-misses, and concept names from a small pool so that
  creating, editing, adding to, deleting and steering with concepts collide. Random data alone
  rarely gets past validation to the code underneath.

Every answer must be below 500, and a refusal must be ``{"detail": one line}``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode, checks

from tests.app.conftest import LOCAL, make_client
from tests.app.world import World

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

OPERATIONS = [
    "GET /api/overview",
    "GET /api/plots/{name}",
    "GET /api/search/regex",
    "GET /api/search/descriptions",
    "GET /api/codes/{site}/{group}/{id}",
    "GET /api/topics",
    "GET /api/documents/{document}",
    "GET /api/documents/{document}/tokens/{position}",
    "GET /api/concepts",
    "POST /api/concepts",
    "GET /api/concepts/{name}",
    "PATCH /api/concepts/{name}",
    "DELETE /api/concepts/{name}",
    "POST /api/concepts/{name}/codes",
    "POST /api/text",
    "POST /api/text/next",
    "POST /api/steer",
]
"""Every operation of the API (checked against the schema, so a new one is not left out)."""

LIMITS = {"max_new_tokens": 8, "max_samples": 2, "generation_time_limit": 5}
"""Small steering limits, so that a fuzzed generation stays short."""


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def schema_of(app: Any) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", app, headers={"Host": "127.0.0.1"})


@pytest.fixture(scope="module")
def fuzz_app(
    web_world: World, loaded: tuple[Any, Any], tmp_path_factory: pytest.TempPathFactory
) -> Any:
    """The browser with the model, small steering limits and a concepts directory of its own,
    shared by the module's fuzz tests."""
    return make_client(web_world, tmp_path_factory.mktemp("fuzz-concepts"), loaded, **LIMITS).app


@pytest.fixture(scope="module")
def bare_app(web_world: World, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The browser without a model."""
    return make_client(web_world, tmp_path_factory.mktemp("fuzz-bare"), None, **LIMITS).app


@pytest.fixture(scope="module")
def api_schema(fuzz_app: Any) -> Any:
    return schema_of(fuzz_app)


def fuzz_operation(schema: Any, label: str, examples: int, **validate: Any) -> None:
    """Send ``examples`` drawn requests (valid and invalid) to one operation and check each
    answer. (Driven by Hypothesis here rather than by schemathesis's pytest loader
    ``from_fixture``, which fails under pytest 9.)"""
    method, path = label.split(" ")
    operation = schema[path][method]
    cases = st.one_of(
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    )

    @fuzz_settings(examples)
    @given(cases)
    def run(case: Any) -> None:
        case.call_and_validate(base_url=LOCAL, **validate)

    run()


def test_the_fuzz_covers_every_operation(api_schema: Any) -> None:
    found = [result.ok().label for result in api_schema.get_all_operations()]
    assert sorted(found) == sorted(OPERATIONS)


@pytest.mark.parametrize("label", OPERATIONS)
def test_schema_fuzz(api_schema: Any, label: str) -> None:
    # Every check of schemathesis (no 5xx, documented status, content type and body, invalid
    # data refused) but "schema-valid data is accepted": a request can fit the schema and still
    # be refused for what it says (a site or concept that does not exist, a bad regex, more
    # tokens than the server allows) with a documented 400 or 404.
    fuzz_operation(api_schema, label, 30, excluded_checks=[checks.positive_data_acceptance])


def test_schema_fuzz_without_model(bare_app: Any) -> None:
    schema = schema_of(bare_app)
    for label in OPERATIONS:
        fuzz_operation(
            schema,
            label,
            8,
            excluded_checks=[checks.positive_data_acceptance],
        )


# ---------------------------------------------------------------------- domain-aware
CONCEPT_NAMES = ["alpha", "beta", "gamma.v2"]
"""A small pool, so that requests about concepts meet the concepts other requests made."""
PATTERNS = [
    "the",
    r"\bthe\b",
    "(d)ragon",
    "[a-z]+",
    ".",
    "^t",
    "&",
    "<",
    "(",
    "*",
    "a{1,99999}",
    "(?P<x>a)|(b)",
    "(a)(b)",
    "()",
    "\\",
    "(?i)THE",
    "x^",
]
PROMPTS = ["the", "the cat", "<b> &", "\x00", " ", "\n", "the " * 70]
REGEX_TEXT = st.text(alphabet="the ca()[]|.*+?^$\\{},0-9<&", min_size=1, max_size=12)
ODD_TEXT = st.text(max_size=12)
NAME_TEXT = ODD_TEXT.filter(lambda t: t not in ("", ".", "..") and not set(t) & set("/?#%"))
"""Odd text that stays one path segment (``#``, ``?``, ``/``, dots would change the URL)."""


def optional(strategy: Any) -> Any:
    return st.none() | strategy


def mostly(good: Any, bad: Any) -> Any:
    """``good`` seven times in eight, else ``bad``."""
    return st.integers(0, 7).flatmap(lambda i: bad if i == 0 else good)


@st.composite
def code_text(draw: Any, sites: list[dict[str, Any]]) -> str:
    """A code as ``SITE/GROUP/ID``: mostly one the model has, else a near miss."""
    site = draw(st.sampled_from(sites))
    name, groups, num_codes = site["name"], site["groups"], site["num_codes"]
    good = st.builds(
        "{}/{}/{}".format, st.just(name), st.integers(0, groups - 1), st.integers(0, num_codes - 1)
    )
    bad = st.sampled_from(
        [
            f"{name}/{groups}/0",
            f"{name}/0/{num_codes}",
            f" {name}/0/0 ",
            f"{name}/0",
            f"{name}//0",
            "layers.9.mlp/0/0",
            "",
        ]
    )
    return draw(mostly(good, bad | ODD_TEXT))


def requests_of(overview: dict[str, Any]) -> Any:
    """Requests built from what the store holds: (operation label, path parameters, query,
    body)."""
    sites = overview["sites"]
    names = [s["name"] for s in sites]
    kinds = sorted({n.rsplit(".", 1)[-1] for n in names})
    site_list = optional(
        st.lists(
            st.sampled_from([*names, *kinds, "layers.*.mlp", "*", "nope", " "]), max_size=3
        ).map(",".join)
        | ODD_TEXT
    )
    concept = mostly(st.sampled_from(CONCEPT_NAMES), NAME_TEXT)
    codes = st.lists(code_text(sites), min_size=1, max_size=4)
    mode = optional(st.sampled_from(["least", "all", "add"]))
    positions = optional(st.sampled_from(["new", "all"]))
    documents = overview["documents"]
    most_tokens, most_samples = LIMITS["max_new_tokens"], LIMITS["max_samples"]
    empty: Any = st.just([])

    def request(label: str, path: Any = None, query: Any = None, body: Any = None) -> Any:
        return st.tuples(
            st.just(label),
            path if isinstance(path, st.SearchStrategy) else st.fixed_dictionaries(path or {}),
            st.fixed_dictionaries(query or {}),
            st.none() if body is None else body,
        )

    def body(required: dict[str, Any], optional_keys: dict[str, Any]) -> Any:
        return st.fixed_dictionaries(required, optional=optional_keys)

    code_path = mostly(
        st.sampled_from(sites).flatmap(
            lambda site: st.fixed_dictionaries(
                {
                    "site": st.just(site["name"]),
                    "group": st.integers(0, site["groups"] - 1),
                    "id": st.integers(0, site["num_codes"] - 1),
                }
            )
        ),
        st.fixed_dictionaries(
            {
                "site": st.sampled_from([*names, "nope", "layers.0", "mlp"]),
                "group": st.integers(0, 5),
                "id": st.integers(0, 70),
            }
        ),
    )
    return st.one_of(
        request("GET /api/overview"),
        request("GET /api/plots/{name}", {"name": st.sampled_from(["loss.png", "nope.png"])}),
        request(
            "GET /api/search/regex",
            query={
                "pattern": st.sampled_from(PATTERNS) | REGEX_TEXT,
                "sites": site_list,
                "sort": st.sampled_from(["f1", "precision", "recall"]),
                "min_precision": st.sampled_from([0.0, 0.5, 1.0]),
                "min_recall": st.sampled_from([0.0, 0.5, 1.0]),
                "min_support": st.sampled_from([1, 2, 50, 2**62]),
                "top": st.integers(1, 200),
                "examples": st.integers(0, 20),
            },
        ),
        request(
            "GET /api/search/descriptions",
            query={
                "query": optional(st.sampled_from(["the", "said don't", "a b c", " "]) | ODD_TEXT),
                "sites": site_list,
                "min_f1": st.sampled_from([0.0, 0.5, 1.0]),
                "top": st.integers(1, 200),
            },
        ),
        request(
            "GET /api/codes/{site}/{group}/{id}",
            code_path,
            {
                "top": st.integers(1, 200),
                "examples": st.integers(0, 100),
                "offset": st.sampled_from([0, 1, 7, 10_000, 2**62]),
            },
        ),
        request(
            "GET /api/topics",
            query={
                "sites": site_list,
                "min_share": st.sampled_from([0.01, 0.5, 1.0]),
                "min_documents": st.sampled_from([1, 2, 1000, 2**62]),
                "label_field": optional(st.sampled_from(["topic", "text", "document", "", "nope"])),
                "label": optional(st.sampled_from(["dragon", "other", "", "nope"]) | ODD_TEXT),
                "top": st.integers(1, 200),
                "sort": optional(st.sampled_from(["documents", "precision", "lift", "f1", "x"])),
                "everywhere": st.sampled_from([0.01, 0.5, 1.0]),
            },
        ),
        request(
            "GET /api/documents/{document}",
            {"document": st.sampled_from([0, 1, documents - 1, documents, 2**62])},
        ),
        request(
            "GET /api/documents/{document}/tokens/{position}",
            {
                "document": st.sampled_from([0, 1, documents - 1, documents, 2**62]),
                "position": st.sampled_from([0, 1, 5, 10_000, 2**62]),
            },
            {"sites": site_list},
        ),
        request("GET /api/concepts"),
        request(
            "POST /api/concepts",
            body=body(
                {"name": concept, "codes": codes},
                {"description": ODD_TEXT, "mode": st.sampled_from(["least", "all", "add"])},
            ),
        ),
        request("GET /api/concepts/{name}", {"name": concept}),
        request(
            "PATCH /api/concepts/{name}",
            {"name": concept},
            body=body(
                {},
                {
                    "codes": codes,
                    "description": ODD_TEXT,
                    "mode": mode,
                    "positions": positions,
                },
            ),
        ),
        request("DELETE /api/concepts/{name}", {"name": concept}),
        request(
            "POST /api/concepts/{name}/codes",
            {"name": concept},
            body=body({"codes": codes}, {"description": ODD_TEXT, "mode": mode}),
        ),
        request(
            "POST /api/text",
            body=body(
                {"text": mostly(st.sampled_from(PROMPTS), ODD_TEXT)},
                {"sites": mostly(st.sampled_from(["", *names, *kinds, "nope"]), ODD_TEXT)},
            ),
        ),
        request(
            "POST /api/text/next",
            body=body(
                {"text": mostly(st.sampled_from(PROMPTS), ODD_TEXT)},
                {
                    "force": mostly(st.lists(code_text(sites), max_size=2), empty),
                    "ablate": mostly(st.lists(code_text(sites), max_size=2), empty),
                    "position": optional(st.integers(0, 40)),
                    "mode": mode,
                },
            ),
        ),
        request(
            "POST /api/steer",
            body=body(
                {"prompt": mostly(st.sampled_from(PROMPTS), ODD_TEXT)},
                {
                    "concept": mostly(st.none(), concept),
                    "codes": mostly(st.lists(code_text(sites), min_size=1, max_size=3), empty),
                    "top": optional(st.integers(1, 5)),
                    "mode": mode,
                    "positions": positions,
                    "generation": optional(
                        body(
                            {},
                            {
                                "max_new_tokens": mostly(
                                    st.integers(1, most_tokens), st.just(most_tokens + 1)
                                ),
                                "temperature": st.sampled_from([0.0, 0.7, 1.0, 100.0]),
                                "top_k": st.sampled_from([0, 1, 5, 1_000_000]),
                                "top_p": st.sampled_from([1e-9, 0.5, 1.0]),
                                "samples": mostly(
                                    st.integers(1, most_samples), st.just(most_samples + 1)
                                ),
                                "seed": st.sampled_from([0, 1, 2**63 - 1]),
                            },
                        )
                    ),
                },
            ),
        ),
    )


DOMAIN_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def domain_fuzz(app: Any, examples: int) -> list[tuple[str, int]]:
    """Run ``examples`` sequences of store-aware requests against ``app``; the statuses seen."""
    from fastapi.testclient import TestClient

    schema = schema_of(app)
    overview = TestClient(app, base_url=LOCAL).get("/api/overview").json()
    seen: list[tuple[str, int]] = []

    code = f"{overview['sites'][0]['name']}/0/0"
    reaching = [  # one sequence that gets past every check, whatever else is drawn
        ("POST /api/concepts", {}, {}, {"name": CONCEPT_NAMES[0], "codes": [code]}),
        ("POST /api/steer", {}, {}, {"prompt": PROMPTS[0], "concept": CONCEPT_NAMES[0]}),
        ("GET /api/search/regex", {}, {"pattern": "the"}, None),
        ("POST /api/text", {}, {}, {"text": PROMPTS[0]}),
        ("POST /api/text/next", {}, {}, {"text": PROMPTS[0], "force": [code]}),
    ]

    @fuzz_settings(examples)
    @given(st.lists(requests_of(overview), min_size=1, max_size=6))
    @example(reaching)
    def run(sequence: list[Any]) -> None:
        for label, path, query, body in sequence:
            method, template = label.split(" ")
            query = {k: v for k, v in query.items() if v is not None}
            if body is not None:
                body = {k: v for k, v in body.items() if v is not None}
            case = schema[template][method].Case(
                path_parameters=path, query=query, **({} if body is None else {"body": body})
            )
            response = case.call_and_validate(base_url=LOCAL, checks=DOMAIN_CHECKS)
            seen.append((label, response.status_code))
            if response.status_code >= 400:
                detail = response.json()["detail"]
                if response.status_code != 422:
                    assert isinstance(detail, str) and "\n" not in detail, detail

    run()
    return seen


def test_domain_fuzz(fuzz_app: Any) -> None:
    seen = domain_fuzz(fuzz_app, 100)
    # The fuzz reached past validation: concepts were made and steering generated.
    assert ("POST /api/concepts", 201) in seen
    assert ("POST /api/steer", 200) in seen
    assert ("GET /api/search/regex", 200) in seen
    assert ("POST /api/text", 200) in seen
    assert ("POST /api/text/next", 200) in seen


def test_domain_fuzz_without_model(bare_app: Any) -> None:
    seen = domain_fuzz(bare_app, 20)
    assert all(status != 201 for _, status in seen)


# ---------------------------------------------------------------------- pages
def pages_of(overview: dict[str, Any]) -> Any:
    """Page URLs with the queries their forms send, from what the store holds."""
    sites = overview["sites"]
    names = [s["name"] for s in sites]
    site_list = st.sampled_from(["", *names, "mlp", "layers.*", "nope"]) | ODD_TEXT
    number = st.sampled_from(["0", "1", "0.5", "", "-1", "x", "1e999", "nan"])
    query = st.fixed_dictionaries

    def url(path: Any, params: Any = None) -> Any:
        params = st.just({}) if params is None else params
        return st.tuples(path, params).map(lambda p: p[0] + "?" + urlencode(p[1]) * bool(p[1]))

    code = st.sampled_from(sites).flatmap(
        lambda s: st.tuples(
            st.just(s["name"]),
            st.integers(0, s["groups"]),
            st.integers(0, s["num_codes"]),
        )
    )
    return st.one_of(
        url(st.just("/")),
        url(
            st.just("/search"),
            query(
                {},
                optional={
                    "pattern": st.sampled_from(PATTERNS) | REGEX_TEXT,
                    "sites": site_list,
                    "sort": st.sampled_from(["f1", "recall", "nope"]),
                    "min_support": number,
                    "min_precision": number,
                    "min_recall": number,
                    "top": number,
                },
            ),
        ),
        url(
            st.just("/describe"),
            query(
                {},
                optional={
                    "query": st.sampled_from(["the", "said", " "]) | ODD_TEXT,
                    "sites": site_list,
                    "min_f1": number,
                    "top": number,
                },
            ),
        ),
        url(
            code.map(lambda c: quote(f"/codes/{c[0]}/{c[1]}/{c[2]}")),
            query({}, optional={"offset": number}),
        ),
        url(
            st.just("/topics"),
            query(
                {},
                optional={
                    "sites": site_list,
                    "min_share": number,
                    "min_documents": number,
                    "label": st.sampled_from(["dragon", "other", "nope"]) | ODD_TEXT,
                    "top": number,
                    "sort": st.sampled_from(["", "documents", "precision", "lift", "f1", "x"]),
                    "everywhere": number,
                },
            ),
        ),
        url(
            st.integers(0, overview["documents"]).map(lambda d: f"/documents/{d}"),
            query({}, optional={"at": number}),
        ),
        url(st.just("/concepts")),
        url(
            (st.sampled_from(CONCEPT_NAMES) | NAME_TEXT).map(
                lambda name: "/concepts/" + quote(name, safe="")
            )
        ),
        url(
            st.just("/text"),
            query(
                {},
                optional={
                    "text": st.sampled_from(PROMPTS) | ODD_TEXT,
                    "sites": site_list,
                    "group": st.sampled_from(["", "0", "1", "99", "-1", "x", "\u00b2"]),
                    "force": st.just(f"{names[0]}/0/0") | ODD_TEXT,
                    "ablate": st.just(f"{names[-1]}/0/1") | ODD_TEXT,
                    "at": st.sampled_from(["", "0", "2", "999", "x", "\u00b2", "9" * 12]),
                    "mode": st.sampled_from(["all", "least", "add", "nope"]),
                },
            ),
        ),
        url(
            st.just("/steer"),
            query(
                {}, optional={"concept": NAME_TEXT, "codes": st.just(",".join(names)) | ODD_TEXT}
            ),
        ),
    )


@pytest.mark.parametrize("model", [True, False], ids=["model", "no-model"])
def test_page_fuzz(model: bool, fuzz_app: Any, bare_app: Any) -> None:
    """The pages never answer 5xx either; each answer is a page (a form error or an error
    page), never a traceback."""
    from fastapi.testclient import TestClient

    client = TestClient(
        fuzz_app if model else bare_app, base_url=LOCAL, raise_server_exceptions=False
    )
    overview = client.get("/api/overview").json()

    @fuzz_settings(60 if model else 20)
    @given(pages_of(overview))
    def run(url: str) -> None:
        response = client.get(url)
        assert response.status_code < 500, (url, response.text[:500])
        assert response.headers["content-type"].startswith("text/html"), url

    run()
