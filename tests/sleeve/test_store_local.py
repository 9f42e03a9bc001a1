import threading

import pytest

from sleeve.store import StoreError, open_store, open_uri, read_json, write_json


def test_put_get_list_delete(tmp_path):
    store = open_store(f"file://{tmp_path}")
    assert store.put_bytes("covers/ab/x.png", b"png") is True
    assert store.get_bytes("covers/ab/x.png") == b"png"
    assert store.exists("covers/ab/x.png") and not store.exists("covers/ab/y.png")
    write_json(store, "manifests/m.json", {"n": 1})
    assert read_json(store, "manifests/m.json") == {"n": 1}
    assert store.list("covers/") == ["covers/ab/x.png"]
    assert store.list() == ["covers/ab/x.png", "manifests/m.json"]
    assert store.delete("covers/ab/x.png") and not store.delete("covers/ab/x.png")
    with pytest.raises(StoreError, match="no object"):
        store.get_bytes("covers/ab/x.png")


def test_create_only_never_overwrites(tmp_path):
    store = open_store(f"file://{tmp_path}")
    assert store.put_bytes("a/k", b"first", create_only=True)
    assert not store.put_bytes("a/k", b"second", create_only=True)
    assert store.get_bytes("a/k") == b"first"
    assert store.put_bytes("a/k", b"third")  # a plain put replaces atomically
    assert store.get_bytes("a/k") == b"third"


def test_concurrent_create_only_has_one_winner(tmp_path):
    store = open_store(f"file://{tmp_path}")
    results = []

    def write(i):
        results.append(store.put_bytes("race/obj", f"writer{i}".encode(), create_only=True))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 1
    assert store.get_bytes("race/obj").startswith(b"writer")
    assert [p.name for p in (tmp_path / "race").iterdir()] == ["obj"]  # no temp files left


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "users/alice@example.com/p.jpg", "sp ace"])
def test_bad_keys_rejected(tmp_path, key):
    with pytest.raises(StoreError):
        open_store(f"file://{tmp_path}").put_bytes(key, b"x")


def test_open_uri_round_trip(tmp_path):
    store = open_store(f"file://{tmp_path}")
    store.put_bytes("m/a.json", b"{}")
    other, key = open_uri(store.uri("m/a.json"), store)
    assert other is store and key == "m/a.json"
    other, key = open_uri(store.uri("m/a.json"))
    assert other.get_bytes(key) == b"{}"
    with pytest.raises(StoreError):
        open_store("s3://x")


def test_job_output_folders_upload_and_download(tmp_path):
    from sleeve.jobs import download_output, upload_output

    store = open_store(f"file://{tmp_path / 'store'}")
    src = tmp_path / "adapter"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(b"w")
    (src / "sub" / "card.md").write_text("card")
    uris = upload_output(store.uri("models/v1"), src)
    assert uris == [store.uri("models/v1/sub/card.md"), store.uri("models/v1/weights.bin")]
    assert store.upload_dir("", src) == ["sub/card.md", "weights.bin"]  # the store's root as prefix
    back = download_output(store.uri("models/v1"), tmp_path / "back")
    assert (back / "sub" / "card.md").read_text() == "card" and (back / "weights.bin").read_bytes() == b"w"


def test_a_local_store_does_not_reach_gcs(tmp_path):
    """Resolving through the configured store never builds a GCS client of its own."""
    with pytest.raises(StoreError, match="outside the configured store"):
        open_uri("gs://elsewhere/a.png", open_store(f"file://{tmp_path}"))


# A write killed between writing its temporary file and renaming it into place (os.replace is
# where put_bytes renames): the process dies exactly there, as a SIGKILL would leave it.
_KILLED_WRITE = """
import os, signal, sys
from sleeve.store import open_store
store = open_store(sys.argv[1])
os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
store.put_bytes("users/u1/photos/face.png", b"face pixels")
"""


def test_a_killed_write_leaves_nothing_that_delete_prefix_misses(tmp_path):
    import signal
    import subprocess
    import sys

    store = open_store(f"file://{tmp_path}")
    store.put_bytes("users/u1/photos/a.png", b"a")
    store.put_bytes("users/u2/photos/b.png", b"b")
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITE, store.url], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    leftover = [p for p in (tmp_path / "users" / "u1" / "photos").iterdir() if p.name.startswith(".")]
    assert [p.read_bytes() for p in leftover] == [b"face pixels"]
    assert store.list("users/u1/") == ["users/u1/photos/a.png"]  # list stays clean

    assert store.delete_prefix("users/u1/") == 2  # the object and the killed write's temp file
    assert [p for p in tmp_path.rglob("*") if p.is_file() and "u1" in p.parts] == []
    assert store.list() == ["users/u2/photos/b.png"]  # other users untouched


@pytest.mark.parametrize("key", [".hidden", "users/u1/.face.png.x.tmp", "a/.b/c"])
def test_keys_never_look_like_temporary_files(tmp_path, key):
    """A key segment starting with '.' would be hidden from list() like a temp file."""
    with pytest.raises(StoreError):
        open_store(f"file://{tmp_path}").put_bytes(key, b"x")
