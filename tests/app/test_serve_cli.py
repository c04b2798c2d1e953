"""``codebook serve``: a real server process answering on 127.0.0.1, and mistakes that end in
one line before anything is served."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest

from codebook_features.cli import main

pytestmark = pytest.mark.slow  # trains models or serves a store: not in `make test-fast`


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_starts_a_server_on_this_machine(web_world, tmp_path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "codebook_features", "serve", str(web_world.store)]
    argv += ["--model", str(web_world.model), "--port", str(port), "--device", "cpu"]
    argv += ["--concepts_dir", str(tmp_path / "concepts")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()  # printed once the app is built
        assert line.strip().startswith(f"code browser on http://127.0.0.1:{port}"), (
            line + process.stderr.read()
        )
        for _ in range(200):
            try:
                overview = httpx.get(f"http://127.0.0.1:{port}/api/overview").json()
                break
            except httpx.TransportError:
                time.sleep(0.05)
        assert overview["model_loaded"] and overview["documents"] > 0
        page = httpx.get(f"http://127.0.0.1:{port}/search", params={"pattern": "dragon"})
        assert page.status_code == 200 and "tokens match" in page.text
    finally:
        process.terminate()
        process.wait(timeout=20)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["serve"], "store is required"),
        (["serve", "{missing}"], "missing"),
        (
            ["serve", "{store}", "--port", "70000"],
            "port: input should be less than or equal to 65535",
        ),
        (["serve", "{store}", "--model", "{missing}"], "missing"),
        (["serve", "{store}", "--run_dir", "{store}"], "not a training run"),
    ],
)
def test_mistakes_end_in_one_line(web_world, tmp_path, capsys, argv, words) -> None:
    names = {"store": str(web_world.store), "missing": str(tmp_path / "missing")}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and words in err


def test_a_port_in_use_is_one_line(web_world, capsys) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(web_world.store), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"cannot listen on 127.0.0.1:{port}" in err


def test_exposing_the_server_warns(web_world, tmp_path) -> None:
    argv = [sys.executable, "-m", "codebook_features", "serve", str(web_world.store)]
    argv += ["--host", "0.0.0.0", "--port", str(free_port())]
    argv += ["--concepts_dir", str(tmp_path / "concepts")]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        warning = process.stderr.readline()
        assert warning.startswith("warning: listening on 0.0.0.0: anyone who can reach"), warning
        assert process.stdout.readline().startswith("code browser on http://0.0.0.0:")
    finally:
        process.terminate()
        process.wait(timeout=20)


def test_connections_send_answers_without_delay() -> None:
    from codebook_features.app.cli import listen

    # asyncio turns Nagle's algorithm off (TCP_NODELAY) only on sockets that say they are TCP;
    # with it on, a kept-alive client waits ~40 ms for each answer
    with listen("127.0.0.1", 0) as listening:
        assert listening.proto == socket.IPPROTO_TCP
