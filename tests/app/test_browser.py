"""The browser in a real web browser: Chromium, driven by Playwright, against the app served over
HTTP. Every page renders with no script error and no failed request; search, sorting, saving a
code to a concept, editing it, steering with it and deleting it work through the pages' own
forms and script; text from the corpus shows as text, never as markup. Screenshots of the pages
are kept in the test's directory.

Needs the system Chromium (Debian: ``apt-get install chromium``); skipped without it."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from codebook_features.steering.generate import sample_seed

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install)")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 15_000
PNG = b"\x89PNG\r\n\x1a\n"
CODE_PATH = re.compile(r"^/codes/[^/]+/\d+/\d+$")
CONCEPT = "markup-test"


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the module."""
    executable = chromium_path()
    if executable is None:
        why = (
            "no Chromium on PATH or at /usr/bin/chromium: install it (Debian/Ubuntu: "
            "`apt-get install chromium`) to run the browser tests"
        )
        if os.environ.get("CODEBOOK_REQUIRE_BROWSER"):  # CI: the browser tests must run
            pytest.fail(why)
        pytest.skip(why)
    sync_api.expect.set_options(timeout=TIMEOUT_MS)
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


class Tab:
    """A page of the browser that records, for its own origin, every console error, failed
    request and error response, and every dialog it opens."""

    def __init__(self, browser: Any, base: str, shots: Path) -> None:
        self.base = base
        self.shots = shots
        self.context = browser.new_context(base_url=base, viewport={"width": 1200, "height": 900})
        self.context.set_default_timeout(TIMEOUT_MS)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        """Dialogs the page opened unasked (an ``alert`` from corpus text would land here)."""
        self.confirmed: list[str] = []
        self.accept_confirm = False
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"page error: {error}"))
        self.page.on("requestfailed", self._failed)
        self.page.on("response", self._response)
        self.page.on("dialog", self._dialog)

    def _ours(self, url: str) -> bool:
        return urlsplit(url).netloc == urlsplit(self.base).netloc

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.problems.append(f"console error: {message.text} ({message.location})")

    def _dialog(self, dialog: Any) -> None:
        if dialog.type == "confirm" and self.accept_confirm:
            self.accept_confirm = False
            self.confirmed.append(dialog.message)
            dialog.accept()
        else:
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

    def _failed(self, request: Any) -> None:
        if self._ours(request.url):
            self.problems.append(f"request failed: {request.url} ({request.failure})")

    def _response(self, response: Any) -> None:
        if self._ours(response.url) and response.status >= 400:
            self.problems.append(f"HTTP {response.status}: {response.url}")

    def open(self, path: str, heading: str | re.Pattern[str]) -> Any:
        response = self.page.goto(path)
        assert response is not None and response.status == 200, (path, response)
        return self.check(heading)

    def check(self, heading: str | re.Pattern[str]) -> Any:
        """The page shows ``heading`` as its h1, and nothing went wrong so far."""
        self.page.wait_for_load_state("load")
        sync_api.expect(self.page.locator("main h1")).to_have_text(heading)
        self.assert_clean()
        return self.page

    def assert_clean(self) -> None:
        assert not self.problems, "\n".join(self.problems)
        assert not self.dialogs, self.dialogs

    def shot(self, name: str) -> Path:
        path = self.shots / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(chromium: Any, live_server: Any, tmp_path: Path) -> Iterator[Tab]:
    shots = tmp_path / "screenshots"
    shots.mkdir()
    opened = Tab(chromium, live_server.url, shots)
    try:
        yield opened
    finally:
        opened.close()


def assert_pngs(paths: list[Path]) -> None:
    for path in paths:
        assert path.is_file(), path
        data = path.read_bytes()
        assert len(data) > len(PNG) and data.startswith(PNG), path


def column(page: Any, table: str, index: int) -> list[float]:
    """The numbers of column ``index`` (1-based) of ``table``, top to bottom."""
    cells = page.locator(f"{table} tbody tr td:nth-child({index})")
    values = []
    for text in cells.all_inner_texts():
        values.append(float(text.replace(",", "").replace("%", "")))
    return values


def test_every_page_renders(tab: Tab) -> None:
    expect = sync_api.expect
    shots = []
    page = tab.open("/", "Overview")
    expect(page.locator("nav a[aria-current=page]")).to_have_text("Overview")
    expect(page.locator("main table.sortable tbody tr").first).to_be_visible()
    # the training run's plot is served and decoded
    plot = page.locator(".plots img").first
    expect(plot).to_be_visible()
    assert plot.evaluate("img => img.complete && img.naturalWidth > 0")
    shots.append(tab.shot("overview"))

    first_code = page.locator("main a.code").first
    code = first_code.inner_text()
    first_code.click()
    page.wait_for_url(re.compile(r"/codes/"))
    assert CODE_PATH.match(urlsplit(page.url).path), page.url
    tab.check(code)
    shots.append(tab.shot("code-page"))

    for path, heading, name in [
        ("/search", "Regex search", "search"),
        ("/describe", "Codes by description", "describe"),
        ("/topics", "Topic codes", "topics"),
        ("/concepts", "Concepts", "concepts"),
        ("/steer", "Steering playground", "steer"),
        ("/text", "Codes of your text", "text"),
        ("/documents/0", "Document 0", "document"),
    ]:
        page = tab.open(path, heading)
        shots.append(tab.shot(name))
    expect(page.locator("pre.document")).not_to_be_empty()

    # the topics form submits as filled in (number fields take any value in range)
    page = tab.open("/topics", "Topic codes")
    page.get_by_label("Min share of a document").fill("0.33")
    page.get_by_label("For label").select_option("dragon")
    page.get_by_label("Rank by").select_option("lift")
    page.get_by_label("Apart above").fill("0.4")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url(re.compile(r"min_share=0\.33.*label=dragon.*sort=lift.*everywhere=0\.4"))
    api = page.request.get(
        "/api/topics?min_share=0.33&label=dragon&sort=lift&everywhere=0.4"
    ).json()
    shown_codes = page.locator("table.topic-codes tbody tr td:first-child a.code")
    expect(shown_codes).to_have_text([t["code"] for t in api["codes"]])
    lifts = column(page, "table.topic-codes", 7)
    assert lifts == sorted(lifts, reverse=True) and lifts
    apart = page.locator("table.everywhere-codes tbody tr td:first-child a.code")
    expect(apart).to_have_text([t["code"] for t in api["everywhere"]])

    # a page that does not exist is an error page, not a crash
    response = page.goto("/documents/999999999")
    assert response is not None and response.status == 404
    expect(page.locator("main h1")).to_have_text("Error 404")
    # the page itself renders; its 404 is the only thing the browser reports
    assert tab.problems and all("/documents/999999999" in p for p in tab.problems), tab.problems
    tab.problems.clear()
    assert_pngs(shots)


def test_search_concept_steer_and_delete(tab: Tab) -> None:
    expect = sync_api.expect
    page = tab.page
    shots = []

    # a regex search through the form
    tab.open("/search", "Regex search")
    page.get_by_label("Pattern").fill("<script>")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"/search\?pattern="))
    tab.check("Regex search")
    results = page.locator("table.results")
    expect(results).to_be_visible()
    rows = results.locator("tbody tr")
    assert rows.count() >= 2, "the search should rank several codes"
    expect(page.locator("main .summary code")).to_have_text("<script>")
    # the corpus' markup is text in the examples, never elements
    expect(page.locator("main .ctx").filter(has_text="<script>").first).to_be_visible()
    assert page.locator("main script, main b").count() == 0
    shots.append(tab.shot("search-results"))

    # sorting by a column header, both ways
    support = results.locator("thead th", has_text="support")
    support.click()
    expect(support).to_have_attribute("aria-sort", "descending")
    values = column(page, "table.results", 6)
    assert values == sorted(values, reverse=True)
    support.click()
    expect(support).to_have_attribute("aria-sort", "ascending")
    values = column(page, "table.results", 6)
    assert values == sorted(values) and values[0] < values[-1]
    assert rows.count() == len(values)
    # hits and several examples per code, as the API gives them
    api = page.request.get("/api/search/regex", params={"pattern": "<script>"}).json()["codes"]
    hits = column(page, "table.results", 5)
    assert all(h <= n for h, n in zip(hits, values, strict=True))
    assert sorted(hits) == sorted(float(c["hits"]) for c in api)
    most = max(len(c["examples"]) for c in api)
    assert most > 1 and page.locator("td.examples").nth(0).locator(".ctx").count() <= most
    assert page.locator("td.examples .ctx").count() == sum(len(c["examples"]) for c in api)
    precision = results.locator("thead th", has_text="precision")
    precision.click()
    values = column(page, "table.results", 2)
    assert values == sorted(values, reverse=True)

    # a minimum recall leaves out the codes below it
    page.get_by_label("Min recall").fill("0.5")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url(re.compile(r"min_recall=0\.5"))
    recalls = column(page, "table.results", 3)
    assert recalls and min(recalls) >= 0.5
    precision = page.locator("table.results thead th", has_text="precision")
    precision.click()
    rows = page.locator("table.results tbody tr")

    # the best code by precision, on its page
    link = rows.first.locator("a.code")
    code = link.inner_text()
    link.click()
    page.wait_for_url(re.compile(r"/codes/"))
    assert urlsplit(page.url).path == f"/codes/{code}"
    assert CODE_PATH.match(urlsplit(page.url).path)
    tab.check(code)
    marks = page.locator("main ol.contexts mark")
    expect(marks.first).to_be_visible()
    expect(marks.first).not_to_be_empty()
    assert page.locator("main script, main b").count() == 0
    # the code classifies the `<script>` token: its markup shows as text on the page
    expect(page.locator("main .tok, main .ctx").filter(has_text="<script>").first).to_be_visible()
    shots.append(tab.shot("code-page"))

    # saved to a new concept from the code page
    page.get_by_placeholder("concept name").fill(CONCEPT)
    page.get_by_label("Forced into").select_option("add")  # the mode is chosen when saving
    page.locator("#save-concept").get_by_role("button", name="Save").click()
    status = page.locator("#save-status")
    expect(status).to_have_text(f"saved to {CONCEPT} (1 codes)")
    expect(status).not_to_have_class(re.compile(r"\bbad\b"))
    expect(status.locator("a")).to_have_attribute("href", f"/concepts/{CONCEPT}")
    assert page.request.get(f"/api/concepts/{CONCEPT}").json()["mode"] == "add"
    tab.assert_clean()

    tab.open("/concepts", "Concepts")
    listed = page.locator("main table tbody tr", has_text=CONCEPT)
    expect(listed).to_have_count(1)
    expect(listed).to_contain_text(code)
    listed.get_by_role("link", name=CONCEPT).click()
    page.wait_for_url(f"**/concepts/{CONCEPT}")
    tab.check(f"Concept {CONCEPT}")
    expect(page.locator("main dl a.code")).to_have_text([code])
    expect(page.get_by_label("Codes, one per line, best first")).to_have_value(code)
    shots.append(tab.shot("concept"))

    # its description edited, saved, and still there after a reload
    description = 'Tokens of <script> & "quoted" markup'
    page.get_by_label("Description").fill(description)
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#concept-status")).to_have_text("saved (1 codes)")
    page.reload()
    tab.check(f"Concept {CONCEPT}")
    expect(page.get_by_label("Description")).to_have_value(description)
    tab.open("/concepts", "Concepts")
    expect(page.locator("main table tbody tr", has_text=CONCEPT)).to_contain_text(description)

    # steering with it in the playground
    tab.open("/steer", "Steering playground")
    form = page.locator("#steer-form")
    form.locator("select[name=concept]").select_option(CONCEPT)
    form.locator("input[name=max_new_tokens]").fill("6")
    form.locator("input[name=samples]").fill("2")
    page.get_by_role("button", name="Generate").click()
    output = page.locator("#steer-output")
    expect(output).to_be_visible()
    expect(page.locator("#steer-status")).to_have_text(re.compile(r"^done in "))
    expect(output.locator("thead th")).to_have_text(["seed", "unsteered", "steered"])
    samples = output.locator("tbody tr")
    expect(samples).to_have_count(2)
    for row in samples.all():
        expect(row.locator("td")).to_have_count(3)
    # each sample's 63-bit seed, digit for digit (past what a JavaScript number holds exactly)
    seeds = [str(sample_seed(0, 0, sample)) for sample in range(2)]
    expect(samples.locator("td:first-child")).to_have_text(seeds)
    expect(page.locator("#steer-what")).to_contain_text(code)
    tab.assert_clean()
    shots.append(tab.shot("steer-result"))

    # deleted from its page, after confirming
    tab.open(f"/concepts/{CONCEPT}", f"Concept {CONCEPT}")
    tab.accept_confirm = True
    page.get_by_role("button", name="Delete").click()
    page.wait_for_url(re.compile(r"/concepts$"))
    tab.check("Concepts")
    assert tab.confirmed == [f"Delete the concept {CONCEPT}?"]
    expect(page.locator("main")).not_to_contain_text(CONCEPT)
    expect(page.locator("main")).to_contain_text("No concepts yet")
    shots.append(tab.shot("concepts-after-delete"))
    tab.assert_clean()
    assert_pngs(shots)


def test_your_text_shows_its_codes_and_links_them(tab: Tab) -> None:
    from codebook_features.app.pages import shown

    assert shown(" a\tb\n") == "\u2423a\u21e5b\u21b5" and shown("ab ") == "ab "
    expect = sync_api.expect
    page = tab.open("/text", "Codes of your text")
    page.get_by_label("Text").fill("the red cat sees a dragon")
    page.get_by_label("Sites").fill("layers.1.mlp")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"/text\?text=the"))
    api = page.request.post("/api/text", data={"text": "the red cat sees a dragon"}).json()
    rows = page.locator("table.text-codes tbody tr")
    expect(rows).to_have_count(len(api["tokens"]))
    for i, token in enumerate(api["tokens"]):  # the token as written, its codes as the API says
        expect(rows.nth(i).locator(".tok")).to_have_text(shown(token["text"]))
        ids = [str(i) for i in token["codes"]["layers.1.mlp"][0] if i >= 0]
        expect(rows.nth(i).locator(".group").first.locator("a.code")).to_have_text(ids)
    headings = page.locator("table.text-codes thead th").all_inner_texts()
    assert headings == ["#", "token", "layers.1.mlp"]
    plain = page.locator("table.next-plain tbody tr")
    expect(plain).to_have_count(10)
    # force a code at the last token: a second distribution, as the API gives it
    forced = rows.last.locator("a.code").first.get_attribute("title")
    page.get_by_label("Force codes").fill(forced)
    page.get_by_label("Slots").select_option("least")
    page.get_by_role("button", name="Run").click()
    page.wait_for_url(re.compile(r"force="))
    text = "the red cat sees a dragon"
    after = page.request.post(
        "/api/text/next", data={"text": text, "force": [forced], "mode": "least"}
    ).json()
    changed = page.locator("table.next-changed tbody tr")
    expect(changed).to_have_count(len(after["changed"]))
    expect(changed.first.locator(".tok")).to_have_text(shown(after["changed"][0]["text"]))
    shot = tab.shot("text")
    rows = page.locator("table.text-codes tbody tr")
    link = rows.last.locator("a.code").first
    code = link.get_attribute("title")
    link.click()
    page.wait_for_url(re.compile(r"/codes/"))
    tab.check(code)
    assert_pngs([shot])


def test_contexts_page_on_and_lead_to_the_token_in_its_document(tab: Tab) -> None:
    expect = sync_api.expect
    page = tab.page
    api = page.request.get("/api/search/regex?pattern=dragon&top=1").json()
    code = api["codes"][0]["code"]
    data = page.request.get(f"/api/codes/{code}?examples=20").json()
    assert data["frequency"] > 10, "the test needs a code with more than one page of contexts"
    tab.open(f"/codes/{code}", code)
    contexts = page.locator("ol.contexts > li")
    expect(contexts).to_have_count(10)
    # every firing in view is marked; the context's own token is the centre mark
    for i, example in enumerate(data["examples"][:10]):
        expect(contexts.nth(i).locator("mark")).to_have_count(len(example["marks"]))
        expect(contexts.nth(i).locator("mark.centre")).to_have_text(example["token"])
    expect(page.locator("table.positions tbody tr")).to_have_count(len(data["positions"]))
    expect(page.locator("table.labels tbody tr")).to_have_count(len(data["labels"]))
    page.get_by_role("link", name=re.compile("next 10")).click()
    page.wait_for_url(re.compile(r"offset=10"))
    tab.check(code)
    expect(page.locator("ol.contexts")).to_have_attribute("start", "11")
    later = data["examples"][10:20]
    expect(page.locator("ol.contexts > li > a")).to_have_text(
        [f"doc {e['document']}, token {e['position']}" for e in later]
    )
    # a context leads to its document, the token marked, its codes shown
    first = later[0]
    page.locator("ol.contexts > li > a").first.click()
    page.wait_for_url(re.compile(rf"/documents/{first['document']}\?at={first['position']}"))
    tab.check(f"Document {first['document']}")
    marked = page.locator("#document .t.from")
    expect(marked).to_have_count(1)
    expect(marked).to_have_attribute("data-p", str(first["position"]))
    expect(marked).to_have_text(first["token"])
    panel = page.locator("#token-codes")
    expect(panel).to_contain_text(f"token {first['position']}")
    expect(panel.locator(f'a.code[title="{code}"]')).to_have_count(1)  # the code fires there
    # another token: its codes as the API gives them, each a link to its page
    other = page.locator('#document .t[data-p="0"]')
    other.click()
    expect(panel).to_contain_text("token 0 ")
    token = page.request.get(f"/api/documents/{first['document']}/tokens/0").json()
    links = panel.locator("a.code")
    expected = [
        f"{s}/{g}/{i}"
        for s, groups in token["codes"].items()
        for g, ids in enumerate(groups)
        for i in ids
        if i >= 0
    ]
    assert [links.nth(i).get_attribute("title") for i in range(links.count())] == expected
    links.first.click()
    page.wait_for_url(re.compile(r"/codes/"))
    tab.check(expected[0])
    assert_pngs([tab.shot("code-after-document")])


def test_codes_found_by_their_description_show_it_on_their_page(tab: Tab) -> None:
    expect = sync_api.expect
    page = tab.open("/describe", "Codes by description")
    best = page.request.get("/api/search/descriptions?top=20").json()["codes"]
    rows = page.locator("table.descriptions tbody tr")
    expect(rows.locator("td:first-child a.code")).to_have_text([d["code"] for d in best])
    expect(rows.locator("td.description")).to_have_text([d["text"] for d in best])
    word = "the"
    page.get_by_label("Words").fill(word)
    page.get_by_label("Min F1").fill("0.05")
    page.get_by_role("button", name="Find").click()
    page.wait_for_url(re.compile(r"/describe\?query=the"))
    found = page.request.get(f"/api/search/descriptions?query={word}&min_f1=0.05").json()["codes"]
    assert found, "the planted store has codes described by 'the'"
    expect(rows.locator("td:first-child a.code")).to_have_text([d["code"] for d in found])
    rows.first.locator("a.code").click()
    page.wait_for_url(re.compile(r"/codes/"))
    tab.check(found[0]["code"])
    expect(page.locator("p.description-line .description")).to_have_text(found[0]["text"])
    expect(page.locator("p.description-line")).to_contain_text(f"F1 {found[0]['f1']:.2f}")
