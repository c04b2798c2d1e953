"""Fixtures of the browser's tests: the recorded world, its model loaded once, and an app (with
its own concepts directory) per test, called in-process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from codebook_features.app import ServeConfig, create_app
from codebook_features.attach.loading import load_model_and_tokenizer
from tests.app.world import World, world

LOCAL = "http://127.0.0.1"
"""In-process requests come as to this machine (the app answers only to its own names)."""


@pytest.fixture(scope="session")
def web_world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return world(tmp_path_factory)


@pytest.fixture(scope="session")
def loaded(web_world: World) -> tuple[Any, Any]:
    return load_model_and_tokenizer(str(web_world.model), "cpu", what="serve")


def make_client(
    world: World, concepts: Path, loaded: tuple[Any, Any] | None, **limits: Any
) -> TestClient:
    config = ServeConfig(
        store=str(world.store),
        model=str(world.model) if loaded else None,
        concepts_dir=str(concepts),
        device="cpu",
        **limits,
    )
    model, tokenizer = loaded or (None, None)
    return TestClient(create_app(config, model, tokenizer), base_url=LOCAL)


@pytest.fixture
def client(web_world: World, loaded: tuple[Any, Any], tmp_path: Path) -> TestClient:
    """The browser with the model, and an empty concepts directory of its own."""
    return make_client(web_world, tmp_path / "concepts", loaded)


@pytest.fixture
def store_only(web_world: World, tmp_path: Path) -> TestClient:
    """The browser without a model."""
    return make_client(web_world, tmp_path / "concepts", None)


class LiveServer:
    """The app served by uvicorn on a free local port, in a thread of the test process."""

    def __init__(self, app: Any) -> None:
        import socket
        import threading

        import uvicorn

        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )

    def __enter__(self) -> LiveServer:
        import time

        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()


@pytest.fixture
def live_server(web_world: World, loaded: tuple[Any, Any], tmp_path: Path) -> Any:
    """A real HTTP server of the browser with the model (its own concepts directory)."""
    client = make_client(web_world, tmp_path / "concepts", loaded)
    with LiveServer(client.app) as server:
        yield server
