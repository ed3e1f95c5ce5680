"""Atomic file writes: a reader never sees a half-written output or checkpoint."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the name is shortened so that a final name near the file-system limit still gets a temporary one
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:64]}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp makes the file private; give it the permissions a plain open() would.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's content, read in blocks."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_weights_only(path: str | Path, error: type[Exception] = ValueError):
    """``torch.load`` with ``weights_only=True`` on CPU; arbitrary, truncated or hostile bytes raise
    ``error`` with one line naming the file (a pickle that would run code is refused by torch)."""
    import pickle
    import struct
    import zipfile

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, struct.error, RuntimeError, EOFError, ValueError,
            KeyError, IndexError, TypeError, AttributeError) as problem:  # the unpickler's failures on arbitrary bytes
        text = str(problem).strip()
        raise error(f"{path}: not a readable weights file ({text.splitlines()[0] if text else type(problem).__name__})"
                    ) from None


def printable(text: object) -> str:
    """``text`` on one line with control characters escaped (a file name holding a newline or a
    terminal escape is shown, never obeyed)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def read_json(path: str | Path, error: type[Exception] = ValueError):
    """Parse a JSON file; malformed JSON raises ``error`` naming the file and the problem."""
    import json

    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as problem:
        raise error(f"{path}: invalid JSON ({problem})") from None


def save_png(path: str | Path, array) -> None:
    """Write a uint8/uint16 grey or RGB array as PNG, atomically."""
    from PIL import Image

    with atomic_path(path) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
