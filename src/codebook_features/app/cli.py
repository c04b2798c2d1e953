"""``codebook serve STORE``: the code browser on this machine (127.0.0.1) unless told otherwise."""

from __future__ import annotations

import argparse
import socket
import sys

from codebook_features.app.config import ServeConfig
from codebook_features.errors import CodebookError
from codebook_features.settings.options import add_options, settings_from_args


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Serve the code browser for a store (written by `codebook record`): regex search, code "
        "pages, topic codes, concepts and, with --model, the steering playground. Pages and "
        "their JSON API (described at /openapi.json) come from the same server."
    )
    add_options(parser, ServeConfig)
    parser.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> None:
    import uvicorn

    from codebook_features.app.server import create_app

    config = settings_from_args(ServeConfig, args)
    app = create_app(config)
    listening = listen(config.host, config.port)
    if config.exposed:
        print(
            f"warning: listening on {config.host}: anyone who can reach this machine can use "
            "the browser (and its steering, which runs the model)",
            file=sys.stderr,
        )
    host = f"[{config.host}]" if ":" in config.host else config.host
    print(f"code browser on http://{host}:{config.port} (Ctrl-C stops it)", flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listening])


def listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port``, so a port in use is one line before anything starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, so asyncio sets TCP_NODELAY on each connection (else a kept-alive client
    # waits for a delayed ACK, about 40 ms, on every answer)
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as error:
        listening.close()
        raise CodebookError(
            f"cannot listen on {host}:{port} ({error.strerror or error}): choose another --port "
            "or --host"
        ) from None
    return listening
