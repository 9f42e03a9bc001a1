"""The warehouse and object-store hooks read ``sleeve_gcp`` as a ``google_cloud_platform``
connection (defined by ``AIRFLOW_CONN_SLEEVE_GCP`` JSON, as the Google provider stores it): the
service-account key in it is what the clients authenticate with.

The object-store test runs the real google-cloud-storage client against gcp-storage-emulator,
with the key's ``token_uri`` pointing at a token endpoint on loopback: the client can only get
a token by signing a grant with the connection's key, so the endpoint sees who signed it."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import pytest
from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook, gcp_credentials

from sleeve.settings import load_settings

EMAIL = "sleeve-test@key-project.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def private_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def keyfile(private_key: str, token_uri: str = "http://127.0.0.1:9/token") -> dict:
    return {"type": "service_account", "project_id": "key-project", "private_key_id": "k1",
            "private_key": private_key, "client_email": EMAIL, "client_id": "1", "token_uri": token_uri}


def define_gcp(monkeypatch, extra: dict) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SLEEVE_GCP", json.dumps({"conn_type": "google_cloud_platform", "extra": extra}))


@pytest.mark.parametrize("shape", ["keyfile_dict as JSON", "keyfile_dict as object", "prefixed names", "key_path"])
def test_every_way_the_provider_stores_a_key(shape, private_key, tmp_path, monkeypatch):
    key = keyfile(private_key)
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(key))
    extra = {
        "keyfile_dict as JSON": {"keyfile_dict": json.dumps(key), "project": "p1"},
        "keyfile_dict as object": {"keyfile_dict": key, "project": "p1"},
        "prefixed names": {"extra__google_cloud_platform__keyfile_dict": json.dumps(key),
                           "extra__google_cloud_platform__project": "p1"},
        "key_path": {"key_path": str(path), "project": "p1"},
    }[shape]
    define_gcp(monkeypatch, extra)
    credentials, project = gcp_credentials("sleeve_gcp")
    assert credentials.service_account_email == EMAIL and project == "p1"


def test_no_key_means_application_default_credentials(monkeypatch):
    assert gcp_credentials("sleeve_gcp") == (None, None)  # not defined
    define_gcp(monkeypatch, {"project": "p2"})
    assert gcp_credentials("sleeve_gcp") == (None, "p2")


def test_bigquery_client_uses_the_connection(private_key, sleeve_env, monkeypatch):
    monkeypatch.setenv("SLEEVE_WAREHOUSE", "bigquery")
    monkeypatch.setenv("SLEEVE_BQ_PROJECT", "settings-project")
    monkeypatch.setenv("SLEEVE_BQ_DATASET", "sleeve")
    define_gcp(monkeypatch, {"keyfile_dict": keyfile(private_key)})
    client = WarehouseHook(settings=load_settings()).warehouse.client
    assert client._credentials.service_account_email == EMAIL and client.project == "settings-project"


class _TokenEndpoint(BaseHTTPRequestHandler):
    signers: list[str] = []

    def do_POST(self):
        form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        claims = form["assertion"].split(".")[1]
        self.signers.append(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["iss"])
        body = json.dumps({"access_token": "ya29.loopback", "expires_in": 3600, "token_type": "Bearer"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_object_store_uses_the_connection_key(private_key, sleeve_env, gcs_emulator, monkeypatch):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
        monkeypatch.setenv("SLEEVE_STORE_URL", "gs://sleeve-test/hook")
        define_gcp(monkeypatch, {"keyfile_dict": keyfile(private_key, f"http://127.0.0.1:{server.server_port}/token"),
                                 "project": "p3"})
        store = ObjectStoreHook(settings=load_settings()).store
        assert store.url == "gs://sleeve-test/hook" and store.client.project == "p3"
        store.put_bytes("covers/a.png", b"png")
        assert store.get_bytes("covers/a.png") == b"png"
        assert _TokenEndpoint.signers and set(_TokenEndpoint.signers) == {EMAIL}
    finally:
        server.shutdown()
