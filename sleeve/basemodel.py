"""Sleeve's trained base model: the committed weights, their checksums, and where they are installed.

The embedded default base model (``SLEEVE_BASE_MODEL`` unset) is a small SDXL-architecture
pipeline the project trained itself on procedurally drawn covers, so that offline covers follow
their prompts and the weekly loop has something to learn from (``python -m simulation.basemodel``
reproduces it; its ``TRAINING.json`` records the seed and the run). The weights are committed
under ``sleeve/assets/base-model`` with ``SHA256SUMS``; :func:`ensure_base_model` checks every
file against it and copies the folder to ``$SLEEVE_HOME/models/sleeve-base``, where it loads
with ``DiffusionPipeline.from_pretrained`` like any SDXL checkpoint.

    python -m sleeve.basemodel verify            # check the committed files (make setup runs it)
    python -m sleeve.basemodel install [DIR]     # verify and copy (default: the settings' path)
    python -m sleeve.basemodel checksums         # rewrite SHA256SUMS after retraining
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "base-model"
SUMS_NAME = "SHA256SUMS"
MARKER = ".complete"


class BaseModelError(RuntimeError):
    """The committed base model is missing or does not match its checksums."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_files(directory: Path) -> list[str]:
    """The model's files (relative paths), without the checksum file and install marker."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and p.name not in (SUMS_NAME, MARKER))


def expected_sums(directory: Path = ASSET_DIR) -> dict[str, str]:
    path = directory / SUMS_NAME
    if not path.is_file():
        raise BaseModelError(f"{path} is missing: the base model is not in this checkout")
    sums = {}
    for line in path.read_text().splitlines():
        if line.strip():
            digest, name = line.split(maxsplit=1)
            sums[name.strip()] = digest
    return sums


def verify(directory: Path = ASSET_DIR) -> dict[str, str]:
    """Check every file of ``directory`` against its ``SHA256SUMS``; raises naming each problem."""
    sums = expected_sums(directory)
    present = set(model_files(directory))
    problems = [f"{name}: missing" for name in sorted(set(sums) - present)]
    problems += [f"{name}: not in {SUMS_NAME}" for name in sorted(present - set(sums))]
    problems += [f"{name}: checksum differs (git lfs or a partial checkout?)" for name in sorted(present & set(sums))
                 if _sha256(directory / name) != sums[name]]
    if problems:
        raise BaseModelError(f"base model at {directory} does not match {SUMS_NAME}: " + "; ".join(problems)
                             + ". Restore it with `git checkout -- sleeve/assets/base-model` or retrain it "
                             "(`python -m simulation.basemodel DIR`, then `python -m sleeve.basemodel checksums`)")
    return sums


def write_checksums(directory: Path = ASSET_DIR) -> Path:
    path = directory / SUMS_NAME
    path.write_text("".join(f"{_sha256(directory / name)}  {name}\n" for name in model_files(directory)))
    return path


def ensure_base_model(target: Path, source: Path = ASSET_DIR) -> Path:
    """Install the verified base model at ``target`` unless the same version is already there.
    It is copied to a temporary sibling and renamed, so a crash never leaves half a model."""
    target = Path(target)
    sums = verify(source)
    stamp = hashlib.sha256("".join(f"{k}{v}" for k, v in sorted(sums.items())).encode()).hexdigest()
    marker = target / MARKER
    if marker.is_file() and marker.read_text().strip() == stamp:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        staged = Path(tmp) / "model"
        shutil.copytree(source, staged)
        (staged / MARKER).write_text(stamp + "\n")
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "verify"
    try:
        if command == "verify":
            print(f"base model OK: {len(verify())} files match {ASSET_DIR / SUMS_NAME}")
        elif command == "install":
            from sleeve.settings import get_settings

            target = Path(args[1]) if len(args) > 1 else get_settings().base_model_dir
            print(f"base model at {ensure_base_model(target)}")
        elif command == "checksums":
            print(f"wrote {write_checksums()}")
        else:
            print(f"unknown command {command!r}; use verify, install [DIR] or checksums", file=sys.stderr)
            return 2
    except BaseModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
