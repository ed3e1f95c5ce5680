"""Service fixtures: the app on a real loopback socket (the app, client and labelling folder are in ../conftest.py)."""

from __future__ import annotations

import threading

import pytest


@pytest.fixture
def live_server(app):
    """The app on a real loopback socket (uvicorn in a thread); yields its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
