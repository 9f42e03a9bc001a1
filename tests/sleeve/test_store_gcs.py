"""GCSStore with the real google-cloud-storage client against gcp-storage-emulator on loopback.

The emulator ignores preconditions, so the create-only test puts a small proxy in front of it
that records what the client sends and answers 412 for ``ifGenerationMatch=0`` on an existing
object, as GCS documents. The test therefore checks our half honestly: that the client sends
the precondition and that a 412 is read as "already there"."""

from __future__ import annotations

import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests


@pytest.fixture
def gcs_client(gcs_emulator, monkeypatch):
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    return storage.Client(project="test")


def test_round_trip_on_emulator(gcs_client):
    from sleeve.store.gcs import GCSStore

    store = GCSStore("sleeve-test", "round-trip", client=gcs_client)
    assert store.url == "gs://sleeve-test/round-trip"
    assert store.put_bytes("covers/x.png", b"png", content_type="image/png")
    assert store.get_bytes("covers/x.png") == b"png"
    assert store.exists("covers/x.png")
    store.put_bytes("covers/y.png", b"y")
    assert store.list("covers/") == ["covers/x.png", "covers/y.png"]
    assert store.delete_prefix("covers/") == 2
    assert store.list("covers/") == []


def test_open_store_and_open_uri_use_the_given_client(gcs_client):
    """The hook's client (credentials from its connection) is the one that reads, also for an
    object in another bucket."""
    from sleeve.store import open_store, open_uri

    store = open_store("gs://sleeve-test/injected", client=gcs_client)
    assert store.client is gcs_client
    store.put_bytes("a.txt", b"a")
    assert store.get_bytes("a.txt") == b"a"
    same, key = open_uri("gs://sleeve-test/injected/a.txt", store)
    assert same is store and key == "a.txt"
    other, key = open_uri("gs://other-bucket/b.txt", store)
    assert other.client is gcs_client and (other.url, key) == ("gs://other-bucket", "b.txt")


class _PreconditionProxy(BaseHTTPRequestHandler):
    upstream = ""
    seen: list[str] = []
    existing: set[str] = set()

    def _forward(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if self.command == "POST" and "/upload/" in self.path:
            name = query.get("name", [""])[0]
            self.seen.append(query.get("ifGenerationMatch", ["-"])[0])
            if query.get("ifGenerationMatch") == ["0"] and name in self.existing:
                self.send_response(412)
                self.send_header("Content-Type", "application/json")
                payload = b'{"error": {"code": 412, "message": "conditionNotMet"}}'
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return
            self.existing.add(name)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
        resp = requests.request(self.command, self.upstream + self.path, data=body, headers=headers, timeout=10)
        self.send_response(resp.status_code)
        for k, v in resp.headers.items():
            if k.lower() not in ("transfer-encoding", "content-length", "connection", "content-encoding"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(resp.content)))
        self.end_headers()
        self.wfile.write(resp.content)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

    def log_message(self, *args):
        pass


def test_create_only_sends_precondition_and_treats_412_as_exists(gcs_emulator, monkeypatch):
    from google.cloud import storage

    from sleeve.store.gcs import GCSStore

    _PreconditionProxy.upstream = gcs_emulator
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PreconditionProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.server_port}")
        store = GCSStore("sleeve-test", "immutable", client=storage.Client(project="test"))
        assert store.put_bytes("obj", b"first", create_only=True) is True
        assert store.put_bytes("obj", b"second", create_only=True) is False
        assert store.get_bytes("obj") == b"first"
        store.put_bytes("other", b"x")  # a plain put sends no precondition
        assert _PreconditionProxy.seen == ["0", "0", "-"]
    finally:
        server.shutdown()
