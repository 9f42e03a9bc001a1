"""Training checkpoints that resume exactly, and only the run they were made for.

    work_dir/checkpoints/step-0000012/
        fingerprint.json   what the run is: hashes of its data, config, base model, code version
                           and number of processes
        lora.safetensors   the trainable LoRA weights (identical on every rank, checked)
        rng-<rank>.pt      each process's generator, torch (and CUDA) and python RNG states
        state.pt           optimizer, LR scheduler, fp16 GradScaler, step, losses (written last)

A checkpoint is written as ``.tmp-step-N`` and renamed into place, so it is complete or absent;
the newest ``keep`` stay. :meth:`Checkpoints.restore` resumes the newest checkpoint whose
fingerprint is the run's; the others are deleted, and ``note`` says why. With ``mirror`` (a
store URI prefix) every checkpoint is copied there as well (``state.pt`` last, so a copy is
complete when it is there) and a restore on a machine without a local copy fetches it: a
DreamBooth training keeps its checkpoints under the user's ``users/<user_id>/`` this way, and
a retry resumes wherever it runs.

All processes of a multi-process (``accelerate launch``) run call ``save`` and ``restore``
together, and share ``work_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from dataclasses import asdict
from pathlib import Path

from sleeve.ids import content_hash

CADENCE = ("checkpoint_every", "checkpoint_seconds", "checkpoints_keep")  # change no result
SAMPLE = 1 << 20  # bytes read from each end of a base-model file


def base_model_identity(base_model: str) -> str:
    """A hash of a local model folder: every file's name and size and its first and last MiB
    (another checkpoint of the same architecture differs there; hashing every byte of an SDXL
    would cost a minute per job). A hub id stands for itself."""
    root = Path(base_model)
    if not root.is_dir():
        return content_hash({"id": base_model})
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        size = path.stat().st_size
        digest.update(f"{path.relative_to(root).as_posix()}\0{size}\0".encode())
        with path.open("rb") as f:
            digest.update(f.read(SAMPLE))
            if size > SAMPLE:
                f.seek(max(SAMPLE, size - SAMPLE))
                digest.update(f.read())
    return digest.hexdigest()


def fingerprint(config, examples, class_examples, *, code: str, world: int, precision: str, pairs=None,
                warm_start_sha256: str = "", reference_sha256: str = "") -> dict:
    """``{"hash", "parts"}`` of everything that decides a run's weights: its data (examples and
    DPO's preference pairs), its settings (not the checkpoint cadence), the warm start's and DPO
    reference's weights, the base model's content, the code version and the number of processes
    (each draws its own micro-batches)."""
    settings = {k: v for k, v in asdict(config).items() if k not in CADENCE and k != "base_model"}
    parts = {
        "data": content_hash([[e.uri, e.sha256, e.caption, e.weight, e.is_prior]
                              for e in [*examples, *(class_examples or [])]]),
        "pairs": content_hash([[p.caption, *([e.uri, e.sha256] for e in (p.preferred, p.dispreferred))]
                               for p in pairs or []]),
        "config": content_hash({**settings, "precision": precision, "warm_start_sha256": warm_start_sha256,
                                "reference_sha256": reference_sha256}),
        "base_model": base_model_identity(config.base_model),
        "code": code,
        "world": world,
    }
    return {"hash": content_hash(parts), "parts": parts}


def tensors_digest(state: dict) -> str:
    """sha256 over the raw bytes of a state dict (the ranks' weights must agree bit for bit)."""
    import torch

    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(key.encode())
        digest.update(tensor.flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def list_checkpoints(work_dir) -> list[Path]:
    """Complete checkpoints, oldest first (temporary ``.tmp-*`` dirs are never listed)."""
    root = Path(work_dir) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if (p / "state.pt").exists()) if root.exists() else []


def _fsync_dir(path: Path) -> None:
    for file in path.iterdir():
        with file.open("rb") as f:
            os.fsync(f.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpoints:
    def __init__(self, work_dir, *, keep: int, fingerprint: dict, accelerator=None, mirror: str | None = None):
        self.work_dir, self.root = Path(work_dir), Path(work_dir) / "checkpoints"
        self.keep, self.fingerprint, self.mirror = keep, fingerprint, mirror
        self.accelerator = accelerator
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1
        self.note = ""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _barrier(self) -> None:
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()

    def digests(self, lora_state: dict) -> list[str]:
        """Every process's :func:`tensors_digest` of its weights, by rank (a collective call)."""
        digest = tensors_digest(lora_state)
        if self.world == 1:
            return [digest]
        from accelerate.utils import gather_object

        return gather_object([digest])

    # ---------------------------------------------------------------- restore

    def restore(self) -> dict | None:
        """The newest checkpoint made for this run's fingerprint, loaded: ``step``, ``losses``,
        ``optimizer``, ``lr_scheduler``, ``scaler``, ``lora`` (state dict) and this rank's RNG
        states; or None (start fresh). Sets ``note``."""
        import torch
        from safetensors.torch import load_file

        if self.mirror and self.is_main:
            self._pull()
        self._barrier()
        found = list_checkpoints(self.work_dir)
        mine = [c for c in found if self._made_for(c).get("hash") == self.fingerprint["hash"]]
        stale = [c for c in found if c not in mine]
        if stale:
            theirs = self._made_for(stale[-1]).get("parts", {})
            differ = [k for k, v in self.fingerprint["parts"].items() if theirs.get(k) != v] or ["fingerprint"]
            self.note = (f"fresh start: {stale[-1].name} was made for other inputs ({', '.join(differ)} "
                         f"differ); {len(stale)} checkpoint(s) discarded")
        self._barrier()  # every rank has looked before the main one deletes
        if self.is_main:
            for checkpoint in stale:
                self._delete(checkpoint)
        if not mine:
            self.note = self.note or "fresh start: no checkpoint"
            return None
        latest = mine[-1]
        state = torch.load(latest / "state.pt", weights_only=False)
        state.update(torch.load(latest / f"rng-{self.rank}.pt", weights_only=False))
        state["lora"] = load_file(str(latest / "lora.safetensors"))
        self.note = f"resumed from {latest.name}"
        return state

    @staticmethod
    def _made_for(checkpoint: Path) -> dict:
        try:
            return json.loads((checkpoint / "fingerprint.json").read_text())
        except (OSError, ValueError):
            return {}

    # ---------------------------------------------------------------- save

    def save(self, step: int, *, lora_state: dict, optimizer, lr_scheduler, scaler, generator, losses) -> Path:
        """Write ``step-N`` (every rank its RNG states, the main one the rest), then keep the
        newest ``keep``. Raises if the ranks' weights differ (gradients were not synced)."""
        import torch
        from safetensors.torch import save_file

        final, tmp = self.root / f"step-{step:07d}", self.root / f".tmp-step-{step:07d}"
        if self.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        self._barrier()
        torch.save({"generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                    "python_rng": random.getstate()}, tmp / f"rng-{self.rank}.pt")
        digests = self.digests(lora_state)  # also: every rank has written its RNG file by now
        if len(set(digests)) > 1:
            raise RuntimeError(f"the {self.world} processes hold different LoRA weights at step {step}: "
                               "their gradients are not synchronised")
        if self.is_main:
            save_file(lora_state, str(tmp / "lora.safetensors"))
            (tmp / "fingerprint.json").write_text(json.dumps(self.fingerprint, sort_keys=True))
            torch.save({"optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else None,
                        "step": step, "losses": list(losses), "rank_digests": digests}, tmp / "state.pt")
            _fsync_dir(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            if self.mirror:
                self._push(final)
            for old in list_checkpoints(self.work_dir)[:-self.keep]:
                self._delete(old)
        return final

    def _delete(self, checkpoint: Path) -> None:
        shutil.rmtree(checkpoint, ignore_errors=True)
        if self.mirror:
            store, prefix = self._mirror()
            store.delete_prefix(f"{prefix}{checkpoint.name}/")

    # ---------------------------------------------------------------- mirror (store)

    def _mirror(self):
        from sleeve.jobs import output_location

        return output_location(self.mirror)

    def _push(self, checkpoint: Path) -> None:
        store, prefix = self._mirror()
        files = sorted(checkpoint.iterdir(), key=lambda p: p.name == "state.pt")  # state.pt last: complete
        for file in files:
            store.put_file(f"{prefix}{checkpoint.name}/{file.name}", file)

    def _pull(self) -> None:
        """Fetch the newest complete checkpoint of the mirror when this machine lacks it."""
        store, prefix = self._mirror()
        complete = sorted(key[len(prefix):].split("/")[0] for key in store.list(prefix) if key.endswith("/state.pt"))
        if not complete or (self.root / complete[-1] / "state.pt").exists():
            return
        name = complete[-1]
        tmp = self.root / f".tmp-pull-{name}"
        shutil.rmtree(tmp, ignore_errors=True)
        store.download_dir(f"{prefix}{name}", tmp)
        shutil.rmtree(self.root / name, ignore_errors=True)
        os.replace(tmp, self.root / name)


def clear(work_dir, mirror: str | None = None) -> None:
    """Remove every checkpoint of a finished run, locally and in the mirror."""
    shutil.rmtree(Path(work_dir) / "checkpoints", ignore_errors=True)
    if mirror:
        from sleeve.jobs import output_location

        store, prefix = output_location(mirror)
        store.delete_prefix(prefix)
