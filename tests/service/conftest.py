"""Service fixtures: the app on a real loopback socket (the app, client and labelling folder are in ../conftest.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@contextmanager
def serving(app) -> Iterator[str]:
    """An app on a real loopback socket (uvicorn in a thread) while the block runs; its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def live_server(app):
    """The session bundle's app on a loopback socket; yields its base URL."""
    with serving(app) as url:
        yield url


@pytest.fixture
def serve():
    """``serve(app)``: a context manager serving another app on a loopback socket (yields its URL)."""
    return serving
