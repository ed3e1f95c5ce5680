"""Checkpoints that carry their config, class scheme and versions, written atomically and
loaded with ``weights_only=True`` (no pickled code runs on load)."""

from __future__ import annotations

import platform
import shutil
from pathlib import Path

from drustage.io_utils import atomic_path, load_weights_only

__all__ = ["CheckpointError", "library_versions", "load_checkpoint", "mismatch_error", "save_checkpoint"]

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, of the wrong kind or could not be written; the message names the file."""


def library_versions() -> dict[str, str]:
    import numpy
    import torch
    import torchvision

    from drustage import __version__

    return {"drustage": __version__, "torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "numpy": numpy.__version__, "python": platform.python_version()}


def save_checkpoint(path: str | Path, kind: str, state_dict: dict, **fields) -> Path:
    """Save ``state_dict`` with plain-data ``fields`` (config, scheme, metrics...) atomically; its
    tensors are stored on the CPU whatever device the model trained on, so every load is CPU-only."""
    import torch

    payload = {"format": f"drustage-{kind}", "version": CHECKPOINT_VERSION, "versions": library_versions(),
               "state_dict": {name: tensor.cpu() for name, tensor in state_dict.items()}, **fields}
    path = Path(path)
    try:
        with atomic_path(path) as tmp:
            torch.save(payload, tmp)
    except RuntimeError as error:  # torch's zip writer reports a full disk as an "enforce fail"
        free_mb = shutil.disk_usage(path.parent).free / 2**20
        raise CheckpointError(f"{path}: checkpoint not written ({_first_line(error)}); "
                              f"{free_mb:.0f} MB free on its disk") from None
    return path


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def mismatch_error(path: str | Path, error: Exception) -> CheckpointError:
    """The error for a checkpoint whose contents this drustage cannot rebuild a model from."""
    return CheckpointError(f"{path}: checkpoint does not match this drustage ({_first_line(error)})")


def load_checkpoint(path: str | Path, kind: str) -> dict:
    """Load and validate a checkpoint of ``kind`` (``classifier`` or ``detector``) on CPU."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    payload = load_weights_only(path, CheckpointError)
    if not isinstance(payload, dict) or "format" not in payload:
        raise CheckpointError(f"{path}: not a drustage checkpoint")
    if payload["format"] != f"drustage-{kind}":
        raise CheckpointError(f"{path}: is a {payload['format']} checkpoint, expected drustage-{kind}")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {payload.get('version')} is not supported "
                              f"(this drustage reads version {CHECKPOINT_VERSION})")
    return payload
