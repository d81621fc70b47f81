"""A hub id that is not cached, offline: one line at once, no network attempted.

Without the offline check, diffusers and transformers retry the hub for 5.6 s (no route) to
34 s (no name service, this machine) before failing."""

import socket
import time

import pytest

from sg2image.models.base import (
    ModelLoadError,
    hub_reachable,
    load_base,
    load_clip_vision,
    local_files_only,
)
from sg2image.pipeline import load_pipeline

FAKE_ID = "sg2image-test/not-cached-anywhere"
LOADERS = [load_base, load_clip_vision, load_pipeline]


@pytest.fixture
def no_network(monkeypatch):
    """Every attempt to open a connection or look a name up is recorded and fails."""
    attempts = []

    def refuse(name):
        def fail(*args, **kwargs):
            attempts.append((name, args[:2]))
            raise OSError(f"test: no network ({name})")

        return fail

    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    return attempts


@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__)
def test_offline_mode_answers_at_once_without_the_network(loader, monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match=f"^{FAKE_ID}: .*hub id could not be reached"):
        loader(FAKE_ID)
    assert time.perf_counter() - start < 3.0
    assert no_network == []  # offline mode: not even a name lookup


@pytest.mark.parametrize("loader", LOADERS, ids=lambda f: f.__name__)
def test_unreachable_hub_answers_at_once(loader, monkeypatch):
    # no offline variable; the hub's address refuses connections: the probe says offline
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="hub id could not be reached"):
        loader(FAKE_ID)
    assert time.perf_counter() - start < 3.0


def test_probe_gives_up_within_its_timeout(monkeypatch):
    def hang(*args, **kwargs):  # a name lookup that never returns (no timeout of its own)
        time.sleep(30)

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.perf_counter()
    assert not hub_reachable(timeout=0.2)
    assert time.perf_counter() - start < 1.0


def test_folders_never_ask_the_network(tmp_path, monkeypatch, no_network):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert not local_files_only(str(tmp_path))  # a folder
    assert not local_files_only("./runs/model")  # a path, not a hub id
    assert no_network == []
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    assert local_files_only(FAKE_ID) and no_network == []
