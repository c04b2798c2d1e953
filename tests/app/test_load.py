"""A bounded load test over real HTTP: 20 clients browse at once (JSON and pages) while steering
requests run beside them. Every answer must be a 200 (or, for steering only, the documented 429
"busy"), with no error or timeout, and every answer must equal the answer to the same request
made alone: concurrency must not mix up the shared store, model or hooks."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest

from tests.app.conftest import LiveServer, make_client

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`

CLIENTS = 20
REQUESTS_PER_CLIENT = 15
STEERERS = 3
STEERS_EACH = 2
TIMEOUT = 20.0
PATTERNS = ["the", "(d)ragon", r"\bking\b", "[aeiou]", "&"]
STEER = {"prompt": "the cat", "generation": {"max_new_tokens": 8, "samples": 1, "seed": 3}}


def plan(client: httpx.Client) -> list[str]:
    """The GET requests the clients share out: the JSON API and the pages, with code pages of
    codes that the searches find."""
    urls = ["/api/overview", "/api/topics", "/api/topics?label=dragon", "/api/concepts"]
    urls += ["/", "/topics", "/concepts", "/concepts/load"]
    codes: list[str] = []
    for pattern in PATTERNS:
        query = urlencode({"pattern": pattern, "top": 5})
        urls += [f"/api/search/regex?{query}", f"/search?{query}"]
        found = client.get(f"/api/search/regex?{query}").json()["codes"]
        codes += [c["url"] for c in found[:2] if c["url"] not in codes]
    assert codes, "the searches found no codes"
    for url in codes:
        urls += ["/api" + url, url]
    for document in (0, 7, 42):
        urls += [f"/api/documents/{document}", f"/documents/{document}"]
    return urls


def answer(response: httpx.Response) -> Any:
    """What must not change under load: the status and the JSON (or page text)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.status_code, response.json()
    return response.status_code, response.text


def steer_answer(data: dict[str, Any]) -> Any:
    return data["steering"], data["samples"], data["stopped_early"]


@pytest.fixture
def live_server(web_world: Any, loaded: tuple[Any, Any], tmp_path: Path) -> Any:
    """The live server, with a regex time limit as long as the clients' timeout: on two busy
    cores a broad pattern can take longer than the default 2 s, and this test is about the
    answers under load, not their latency (a search cut short would be a 400)."""
    client = make_client(web_world, tmp_path / "concepts", loaded, regex_time_limit=TIMEOUT)
    with LiveServer(client.app) as server:
        yield server


def test_concurrent_clients_get_the_answers_of_one_at_a_time(live_server: Any) -> None:
    with httpx.Client(base_url=live_server.url, timeout=TIMEOUT) as client:
        concept = {"name": "load", "codes": ["layers.0.mlp/0/1", "layers.1.mlp/0/2"]}
        made = client.post("/api/concepts", json=concept)
        assert made.status_code == 201, made.text
        urls = plan(client)
        alone = {}
        for url in urls:
            response = client.get(url)
            assert response.status_code == 200, (url, response.text[:300])
            alone[url] = answer(response)
        steered = client.post("/api/steer", json=STEER | {"concept": "load"})
        assert steered.status_code == 200, steered.text
        steered_alone = steer_answer(steered.json())

    errors: list[str] = []
    answers: list[tuple[str, Any]] = []
    steer_statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(CLIENTS + STEERERS)

    def browse(index: int) -> None:
        mine = [urls[(index * 7 + i) % len(urls)] for i in range(REQUESTS_PER_CLIENT)]
        with httpx.Client(base_url=live_server.url, timeout=TIMEOUT) as http:
            barrier.wait()
            for url in mine:
                try:
                    response = http.get(url)
                except httpx.HTTPError as error:
                    with lock:
                        errors.append(f"GET {url}: {type(error).__name__}: {error}")
                    continue
                with lock:
                    if response.status_code != 200:
                        errors.append(f"GET {url}: {response.status_code} {response.text[:200]}")
                    answers.append((url, answer(response)))

    def steer() -> None:
        with httpx.Client(base_url=live_server.url, timeout=TIMEOUT) as http:
            barrier.wait()
            for _ in range(STEERS_EACH):
                try:
                    response = http.post("/api/steer", json=STEER | {"concept": "load"})
                except httpx.HTTPError as error:
                    with lock:
                        errors.append(f"POST /api/steer: {type(error).__name__}: {error}")
                    continue
                with lock:
                    steer_statuses.append(response.status_code)
                    if response.status_code == 200:
                        if steer_answer(response.json()) != steered_alone:
                            errors.append("POST /api/steer: a different generation under load")
                    elif response.status_code != 429:
                        errors.append(f"POST /api/steer: {response.status_code} {response.text}")

    threads = [threading.Thread(target=browse, args=(i,)) for i in range(CLIENTS)]
    threads += [threading.Thread(target=steer) for _ in range(STEERERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a client hung"

    assert not errors, "\n".join(errors[:20])
    assert len(answers) == CLIENTS * REQUESTS_PER_CLIENT
    assert len(steer_statuses) == STEERERS * STEERS_EACH
    assert 200 in steer_statuses
    changed = sorted({url for url, got in answers if got != alone[url]})
    assert not changed, f"answers under load differ from answers alone: {changed}"
