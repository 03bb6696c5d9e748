"""Cache entries on disk: a folder built once, published whole, and checked before it is trusted.

An entry is built in a staging folder beside it, listed in a manifest (each file's size, SHA-256 and
modification time), flushed to disk (files, then folders) and renamed into place, so a crash or a power
cut leaves the old state or the whole entry, never half of one. Before an entry is used its files are
checked against the manifest: sizes always (a stat); contents (SHA-256) only when a file's modification
time differs from the one recorded (something wrote to it), because hashing SmolLM2's 540 MB converted
weights takes 0.7 s, as long as the whole cached load, at every start. An entry that fails is moved aside
and rebuilt with a warning. Does not: evict old entries, or lock (two processes building one entry both build it;
the first rename wins and the other's copy is dropped).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

MANIFEST = "manifest.json"


def ensure(entry: Path, build: Callable[[Path], None]) -> Path:
    """`entry`, checked against its manifest: as found, or (missing or failing the check) built again.

    `build(folder)` writes the entry's files into an empty staging folder; a warning says why an entry
    that existed is rebuilt."""
    if entry.exists():
        problem = check(entry)
        if problem is None:
            return entry
        warnings.warn(f"cache entry {entry} is not usable ({problem}); building it again", stacklevel=3)
        _discard(entry)
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=entry.parent, prefix=".partial-"))
    try:
        build(staging)
        _publish(staging, entry)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already when published
    return entry


def check(entry: Path) -> str | None:
    """None when every file the manifest lists is there with its size (and hash, if its mtime moved); else why not."""
    try:
        listed = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))["files"]
        expected = {name: (int(f["size"]), str(f["sha256"]), int(f["mtime_ns"])) for name, f in listed.items()}
    except FileNotFoundError:
        return "it has no manifest: an interrupted write, or an older llmkit"
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        return f"its manifest is unreadable ({type(error).__name__}: {error})"
    for name, (size, sha256, mtime_ns) in expected.items():
        path = entry / name
        if path.parent != entry:
            return f"its manifest names {name!r}, which is not a file of the entry"
        try:
            stat = path.stat()
        except OSError:
            return f"{name} is missing"
        if stat.st_size != size:
            return f"{name} is {stat.st_size} bytes, the manifest says {size}"
        if stat.st_mtime_ns != mtime_ns and _sha256(path) != sha256:
            return f"{name} does not match the SHA-256 in the manifest"
    return None


def _publish(staging: Path, entry: Path) -> None:
    """Write the manifest of `staging`'s files, flush everything to disk, then rename `staging` to `entry`."""
    files = {}
    for path in sorted(p for p in staging.iterdir() if p.is_file()):
        _fsync(path)
        stat = path.stat()
        files[path.name] = {"size": stat.st_size, "sha256": _sha256(path), "mtime_ns": stat.st_mtime_ns}
    manifest = staging / MANIFEST
    manifest.write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")
    _fsync(manifest)
    _fsync(staging)
    try:
        os.replace(staging, entry)  # atomic: readers see all of it or none
    except OSError:
        if not entry.is_dir():
            raise
        return  # another process published the same entry first; ours is dropped
    _fsync(entry.parent)


def _discard(entry: Path) -> None:
    """Move `entry` aside (atomically: nobody sees half of it) and delete it."""
    stale = entry.with_name(f".stale-{uuid.uuid4().hex}")
    try:
        os.replace(entry, stale)
    except FileNotFoundError:
        return  # another process discarded it first
    shutil.rmtree(stale, ignore_errors=True)


def _sha256(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file, or a folder's entries, to disk. Windows cannot open a folder: there its rename is enough."""
    if path.is_dir() and os.name == "nt":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
