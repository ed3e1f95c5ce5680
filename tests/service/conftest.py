"""Service fixtures: a labelling folder of phantoms and the app over the session's trained bundle."""

from __future__ import annotations

import shutil
import threading

import pytest


@pytest.fixture
def label_dir(trained, tmp_path):
    """A plain folder of four phantom radiographs (no labels yet)."""
    root, _ = trained
    folder = tmp_path / "to-label"
    folder.mkdir()
    for group in ("young", "old"):
        for source in sorted((root / group / "images").glob("*.png"))[:2]:
            shutil.copy(source, folder / f"{group}-{source.name}")
    return folder


@pytest.fixture
def app(trained, label_dir):
    from drustage.service.app import ServiceConfig, create_app

    # The session bundle's detector is barely trained: threshold 0 keeps its best boxes so the
    # page and API always have boxes to show.
    return create_app(ServiceConfig(model=trained[1], label_dir=label_dir, detection_threshold=0.0))


@pytest.fixture
def client(app):
    from fastapi.testclient import TestClient

    with TestClient(app) as test_client:
        yield test_client


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
