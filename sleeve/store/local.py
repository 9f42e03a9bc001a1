from __future__ import annotations

import os
import tempfile
from pathlib import Path

from sleeve.store.base import ObjectStore, StoreError, check_key


class LocalStore(ObjectStore):
    """A directory tree. Atomic writes: temp file in the target directory, then rename
    (replace) or hard link (create-only, which fails if the name exists). Temp files are named
    ``.<name>.<random>.tmp`` (no key starts with '.'): ``list`` never shows them, and
    ``delete_prefix`` removes them too, so a write killed inside a prefix leaves nothing behind
    that deleting the prefix (forgetting a user) misses."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put_bytes(self, key, data, *, content_type=None, create_only=False):
        path = self._path(key)
        if create_only and path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if create_only:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
            return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def get_bytes(self, key):
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no object at {self.uri(key)}") from None

    def exists(self, key):
        return self._path(key).is_file()

    def _files(self, prefix: str) -> list[Path]:
        """Every file under ``prefix``, temporary ones included."""
        base = self.root / prefix.rstrip("/") if prefix.rstrip("/") else self.root
        if prefix and not prefix.endswith("/") and not base.is_dir():
            base = base.parent
        if not base.exists():
            return []
        return [p for p in base.rglob("*") if p.is_file() and p.relative_to(self.root).as_posix().startswith(prefix)]

    def list(self, prefix=""):
        return sorted(p.relative_to(self.root).as_posix() for p in self._files(prefix) if not p.name.startswith("."))

    def delete_prefix(self, prefix):
        """Delete every object under ``prefix`` and any temp file a killed write left there,
        then the folders left empty; returns the files removed."""
        files = self._files(prefix)
        for path in files:
            path.unlink(missing_ok=True)
        for folder in sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True):
            while folder != self.root:
                try:
                    folder.rmdir()
                except OSError:  # not empty (or gone)
                    break
                folder = folder.parent
        return len(files)

    def delete(self, key):
        try:
            self._path(key).unlink()
            return True
        except FileNotFoundError:
            return False
