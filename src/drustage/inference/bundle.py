"""Model bundles: one directory (or .zip) holding the detector and both classifiers.

::

    BUNDLE/
      bundle.json     format, version, files, class schemes, metrics, training-data summary, versions
      detector.pt     drustage-detector checkpoint
      radius.pt       drustage-classifier checkpoint (bone radius)
      ulna.pt         drustage-classifier checkpoint (bone ulna)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from drustage.io_utils import atomic_path, atomic_write_text, file_sha256, read_json
from drustage.stages import BONES

__all__ = ["Bundle", "BundleError", "assemble_bundle", "check_member", "load_bundle"]

BUNDLE_FORMAT = "drustage-bundle"
BUNDLE_VERSION = 1
MANIFEST = "bundle.json"
FILES = {"detector": "detector.pt", "radius": "radius.pt", "ulna": "ulna.pt"}
# An archive member larger than this, or inflating more than MAX_INFLATION times, is no checkpoint
# of ours (the paper's detector is about 300 MB and checkpoints barely compress).
MAX_MEMBER_BYTES = 1 << 30
MAX_INFLATION = 20


class BundleError(ValueError):
    """A bundle is incomplete or inconsistent; the message names what is wrong."""


@dataclass(frozen=True)
class Bundle:
    root: Path
    manifest: dict
    fingerprint: str  # sha256 over the manifest and checkpoints
    source: Path  # what the user named: the directory, or the .zip it was extracted from

    def path(self, part: str) -> Path:
        return self.root / FILES[part]


def _sha256(paths: list[Path]) -> str:
    """One sha256 over several files' contents in turn (the bundle fingerprint)."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _data_summary(payload: dict) -> dict:
    """A checkpoint's data record without its lists of held-out image ids."""
    return {k: v for k, v in payload.get("data", {}).items() if not k.startswith("test_ids")}


def assemble_bundle(out: str | Path, detector: str | Path, radius: str | Path, ulna: str | Path,
                    archive: bool = False) -> Path:
    """Copy and validate three checkpoints into a bundle directory (and optionally a .zip)."""
    from drustage.inference.checkpoints import load_checkpoint

    sources = {"detector": Path(detector), "radius": Path(radius), "ulna": Path(ulna)}
    payloads = {"detector": load_checkpoint(sources["detector"], "detector")}
    for bone in BONES:
        payload = load_checkpoint(sources[bone], "classifier")
        if payload["config"]["bone"] != bone:
            raise BundleError(f"{sources[bone]}: is a {payload['config']['bone']} classifier, expected {bone}")
        payloads[bone] = payload
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for part, source in sources.items():
        with atomic_path(out / FILES[part]) as tmp:
            shutil.copyfile(source, tmp)
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "files": FILES,
        # what each file is, checked on every load: a classifier swapped for the other bone's, or a
        # file changed after assembly, is refused instead of read
        "members": {part: {"file": FILES[part], "kind": "detector" if part == "detector" else "classifier",
                           "bone": None if part == "detector" else part,
                           "scheme": None if part == "detector" else payloads[part]["scheme"]["name"],
                           "sha256": file_sha256(out / FILES[part])} for part in FILES},
        "detector": {"config": payloads["detector"]["config"], "metrics": payloads["detector"].get("metrics"),
                     "data": _data_summary(payloads["detector"])},
        # readability: the class spread above which a reading is withheld (both runtimes read it here)
        **{bone: {"scheme": payloads[bone]["scheme"], "config": payloads[bone]["config"],
                  "metrics": payloads[bone].get("metrics"), "readability": payloads[bone].get("readability"),
                  "data": _data_summary(payloads[bone])}
           for bone in BONES},
        "versions": payloads["detector"]["versions"],
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    if archive:
        with atomic_path(out.with_suffix(".zip")) as tmp:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as handle:
                for name in [MANIFEST, *FILES.values()]:
                    handle.write(out / name, name)
    return out


def bundle_cache_dir() -> Path:
    """Where zip bundles are extracted: ``$XDG_CACHE_HOME/drustage/bundles`` (``~/.cache`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "drustage" / "bundles"


def _extract_once(archive: Path) -> Path:
    """The archive's files in a cache folder named by the archive's sha256, extracted on first use.

    A temporary copy per load would pile up, tens of MB for every ``predict`` run and every
    worker; a folder named by content is shared by them all and cannot go stale.
    """
    target = bundle_cache_dir() / file_sha256(archive)
    names = [MANIFEST, *FILES.values()]

    def complete() -> bool:
        return all((target / name).is_file() for name in names)

    if complete():
        return target
    try:
        with zipfile.ZipFile(archive) as handle:
            missing = set(names) - set(handle.namelist())
            if missing:
                raise BundleError(f"{archive}: archive lacks {', '.join(sorted(missing))}")
            target.parent.mkdir(parents=True, exist_ok=True)
            # the staging folder is removed on the way out unless it was renamed into place
            with tempfile.TemporaryDirectory(prefix=f".{target.name[:12]}-", dir=target.parent,
                                             ignore_cleanup_errors=True) as folder:
                staging = Path(folder)
                for name in names:
                    _extract_member(handle, name, staging / name, archive)  # fixed names: no path from the archive
                try:
                    staging.rename(target)
                except OSError:  # a folder is there: another process's copy, or an incomplete one
                    if not complete():
                        shutil.rmtree(target)
                        staging.rename(target)
    except zipfile.BadZipFile:
        raise BundleError(f"{archive}: not a zip archive") from None
    return target


def _extract_member(handle: zipfile.ZipFile, name: str, target: Path, archive: Path) -> None:
    """Copy one member out in blocks, refusing one whose declared or real size is out of bounds."""
    info = handle.getinfo(name)
    if info.file_size > MAX_MEMBER_BYTES or info.file_size > MAX_INFLATION * max(info.compress_size, 1 << 20):
        raise BundleError(f"{archive}: member {name} would inflate to {info.file_size >> 20} MiB: not a bundle file")
    written = 0
    with handle.open(info) as source, open(target, "wb") as sink:
        while block := source.read(1 << 20):
            written += len(block)
            if written > info.file_size:
                raise BundleError(f"{archive}: member {name} is larger than its header says")
            sink.write(block)


def _check_manifest(manifest, manifest_path: Path, path: Path) -> None:
    """The manifest's shape, and each member file against what the manifest records of it."""
    from drustage.stages import scheme_from_dict

    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object")
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path}: format is {manifest.get('format')!r}, expected {BUNDLE_FORMAT}")
    if manifest.get("version") != BUNDLE_VERSION:
        raise BundleError(f"{manifest_path}: bundle version {manifest.get('version')} is not supported")
    for bone in BONES:
        entry = manifest.get(bone)
        if not isinstance(entry, dict) or not isinstance(entry.get("scheme"), dict):
            raise BundleError(f"{manifest_path}: no {bone} classifier entry with its class scheme")
        try:
            scheme_from_dict(entry["scheme"])
        except (KeyError, TypeError, ValueError) as error:
            raise BundleError(f"{manifest_path}: the {bone} class scheme is malformed ({error})") from None
    members = manifest.get("members")
    if members is None:  # bundles assembled before members were recorded
        return
    if not isinstance(members, dict) or set(members) != set(FILES):
        raise BundleError(f"{manifest_path}: members must name {', '.join(FILES)}")
    for part, member in members.items():
        if not isinstance(member, dict) or member.get("file") != FILES[part]:
            raise BundleError(f"{manifest_path}: member {part} must be the file {FILES[part]}")
        if file_sha256(path / FILES[part]) != member.get("sha256"):
            raise BundleError(f"{path / FILES[part]}: content differs from what bundle.json records for the {part} "
                              "(a changed or swapped file)")


def check_member(bundle: "Bundle", part: str, payload: dict) -> None:
    """A loaded checkpoint is the bundle member it is filed as: its bone and class scheme."""
    if part == "detector":
        return
    bone = payload.get("config", {}).get("bone")
    if bone != part:
        raise BundleError(f"{bundle.path(part)}: holds a {bone} classifier, filed as the {part} one")
    expected = bundle.manifest[part]["scheme"].get("name")
    if payload.get("scheme", {}).get("name") != expected:
        raise BundleError(f"{bundle.path(part)}: class scheme {payload.get('scheme', {}).get('name')!r} differs from "
                          f"bundle.json's {expected!r}")


def load_bundle(path: str | Path) -> Bundle:
    """Open and validate a bundle directory or .zip; raises ``BundleError`` naming the problem."""
    path = source = Path(path)
    if path.is_file() and path.suffix == ".zip":
        path = _extract_once(path)
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle directory")
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{path}: not a drustage bundle (no {MANIFEST})")
    manifest = read_json(manifest_path, BundleError)
    missing = [name for name in FILES.values() if not (path / name).is_file()]
    if missing:
        raise BundleError(f"{path}: bundle lacks {', '.join(missing)}")
    _check_manifest(manifest, manifest_path, path)
    fingerprint = _sha256([manifest_path, *(path / name for name in FILES.values())])
    return Bundle(path, manifest, fingerprint, source)
