"""Scratch space of GPU jobs: one known root (``SLEEVE_SCRATCH_DIR``, default
``$SLEEVE_HOME/scratch``), a folder per job, and nothing a job writes locally anywhere else.

    with job_scratch("personalize-<request_id>", user_id=user_id) as folder:
        ...  # latents, checkpoints, the adapter before upload

A folder lives while a process holding it does: each holder keeps a shared ``flock`` on the
folder, which the kernel drops when the process dies, even by SIGKILL. :func:`sweep` (every job
runs it at start, see :func:`sleeve.jobs.run_job`) removes the folders nobody holds, that is the
leftovers of killed jobs; :func:`forget` removes a user's folders, held or not
(``training.privacy.forget_user`` calls it). Folders of several processes of one job (the ranks
of ``accelerate launch``) share a name; ``.owner.json`` in a folder says whose data it holds.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

OWNER = ".owner.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")


def scratch_root() -> Path:
    from sleeve.settings import get_settings

    return get_settings().scratch_dir


def _held(folder: Path) -> int | None:
    """A descriptor holding ``folder`` (shared lock), or None if it vanished or was replaced
    (a sweep renamed it away between our mkdir and our lock)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    fcntl.flock(fd, fcntl.LOCK_SH)
    if not _same(folder, fd):
        os.close(fd)
        return None
    return fd


@contextmanager
def job_scratch(name: str, *, user_id: str | None = None) -> Iterator[Path]:
    """A folder ``<root>/<name>/`` for this job, empty unless another process of the same job
    holds it too; removed when the block ends (however it ends, short of the process being
    killed: then the next job's sweep removes it)."""
    if not _NAME.match(name):
        raise ValueError(f"scratch folder name {name!r} must be letters, digits and ._=- only")
    root = scratch_root()
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    for _ in range(100):
        _reap(folder)  # a killed job's folder of the same name
        folder.mkdir(exist_ok=True)
        fd = _held(folder)
        if fd is not None:
            break
    else:
        raise RuntimeError(f"could not hold scratch folder {folder}")
    try:
        tmp = folder / f"{OWNER}.{os.getpid()}"
        tmp.write_text(json.dumps({"job": name, "user_id": user_id}))
        os.replace(tmp, folder / OWNER)
        yield folder
    finally:
        try:  # the last holder removes it (a sweep or forget may have done so already)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _same(folder, fd):
                _remove(folder)
        except BlockingIOError:
            pass  # another process of the same job still uses it
        finally:
            os.close(fd)


def _same(folder: Path, fd: int) -> bool:
    try:
        return os.stat(folder).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _reap(folder: Path) -> int | None:
    """Remove ``folder`` if no live process holds it; the files removed, or None if in use."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return None
    else:
        return _remove(folder) if _same(folder, fd) else 0
    finally:
        os.close(fd)


def _remove(folder: Path) -> int:
    """Rename out of the way (atomic), then delete; returns the files removed (bookkeeping
    files not counted)."""
    grave = folder.with_name(f".gone-{uuid.uuid4().hex}")
    try:
        os.rename(folder, grave)
    except FileNotFoundError:
        return 0
    count = sum(1 for p in grave.rglob("*") if p.is_file() and not p.name.startswith(OWNER))
    shutil.rmtree(grave, ignore_errors=True)
    return count


def _folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def sweep(root: Path | None = None) -> int:
    """Remove every folder no live process holds (and half-removed ones); returns how many."""
    removed = 0
    for folder in _folders(root or scratch_root()):
        if folder.name.startswith(".gone-"):
            shutil.rmtree(folder, ignore_errors=True)
        elif _reap(folder) is not None:
            removed += 1
    return removed


def owner(folder: Path) -> dict:
    try:
        return json.loads((folder / OWNER).read_text())
    except (OSError, ValueError):
        return {}


def forget(user_id: str, root: Path | None = None) -> int:
    """Remove the folders holding ``user_id``'s data, in use or not; returns the files removed."""
    return sum(_remove(folder) for folder in _folders(root or scratch_root())
               if owner(folder).get("user_id") == user_id)
