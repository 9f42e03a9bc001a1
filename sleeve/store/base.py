from __future__ import annotations

import re
from abc import ABC, abstractmethod
from pathlib import Path


class StoreError(RuntimeError):
    pass


_KEY = re.compile(r"^[A-Za-z0-9._=\-]+(/[A-Za-z0-9._=\-]+)*$")
_EMAIL = re.compile(r"[^/@\s]+@[^/@\s]+\.[A-Za-z]{2,}")


def check_key(key: str) -> str:
    """Keys are plain relative paths: no '..', no absolute paths, no segment starting with '.'
    (the local store's temporary files do), and never an email address (keys end up in logs
    and URLs, so personal data must not be in them)."""
    if not key or not _KEY.match(key) or any(part.startswith(".") for part in key.split("/")):
        raise StoreError(f"invalid object key {key!r}: use relative a/b/c paths of [A-Za-z0-9._=-], "
                         "no part starting with '.'")
    if _EMAIL.search(key):
        raise StoreError("object keys must not contain email addresses")
    return key


class ObjectStore(ABC):
    """A few verbs over a bucket-like namespace. Writes are atomic: a reader sees the old object
    or the whole new one, never a partial file."""

    url: str

    def uri(self, key: str) -> str:
        return f"{self.url}/{check_key(key)}"

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None,
                  create_only: bool = False) -> bool:
        """Write ``data`` at ``key``. With ``create_only`` an existing object is left untouched
        (immutable, content-addressed objects). Returns True if this call wrote the object."""

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (a folder-like prefix), sorted."""

    @abstractmethod
    def delete(self, key: str) -> bool:
        """Remove one object; True if it existed."""

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    def put_file(self, key: str, path: str | Path, *, content_type: str | None = None,
                 create_only: bool = False) -> bool:
        return self.put_bytes(key, Path(path).read_bytes(), content_type=content_type, create_only=create_only)

    def download(self, key: str, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.part")
        tmp.write_bytes(self.get_bytes(key))
        tmp.replace(path)
        return path

    def upload_dir(self, prefix: str, directory: str | Path) -> list[str]:
        """Upload every file below ``directory`` under ``prefix`` (a folder-like key prefix, or ''
        for the root); returns the keys written."""
        directory = Path(directory)
        folder = prefix.rstrip("/") + "/" if prefix.rstrip("/") else ""
        keys = []
        for file in sorted(p for p in directory.rglob("*") if p.is_file()):
            key = folder + file.relative_to(directory).as_posix()
            self.put_file(key, file)
            keys.append(key)
        return keys

    def download_dir(self, prefix: str, directory: str | Path) -> Path:
        directory = Path(directory)
        prefix = prefix.rstrip("/") + "/"
        for key in self.list(prefix):
            self.download(key, directory / key[len(prefix):])
        return directory
