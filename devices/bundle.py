"""Deployment bundles: a manifest with the SHA-256 of every file, verification, and safe unpacking.

Standard library only, so that this file also runs on its own (``python3 bundle.py unpack ARCHIVE DEST``) on a
device that has nothing of edgex yet.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
from pathlib import Path

MANIFEST = "manifest.json"
SCHEMA = "edgex.bundle/1"


class BundleError(Exception):
    """A bundle that cannot be trusted: tampered, incomplete, or an archive that tries to escape."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_files(root: Path) -> list[str]:
    """Every regular file under ``root`` except the manifest, as sorted POSIX relative paths."""
    root = Path(root)
    found = []
    for path in root.rglob("*"):
        if path.is_symlink():
            raise BundleError(f"symbolic link in bundle: {path.relative_to(root).as_posix()}")
        if path.is_file() and path != root / MANIFEST:
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


def write_manifest(root: Path, fields: dict) -> dict:
    """Hash every file of the bundle into ``manifest.json`` (with ``fields``: target, model, defaults...)."""
    root = Path(root)
    files = {name: sha256(root / name) for name in bundle_files(root) if "__pycache__" not in name}
    manifest = {"schema": SCHEMA, **fields, "files": files}
    (root / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_manifest(root: Path) -> dict:
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise BundleError(f"{root} is not an edgex bundle (no {MANIFEST})")
    try:
        manifest = json.loads(path.read_text())
    except ValueError as exc:
        raise BundleError(f"{MANIFEST} is not valid JSON: {exc}") from exc
    if manifest.get("schema") != SCHEMA:
        raise BundleError(f"{MANIFEST} has schema {manifest.get('schema')!r}, expected {SCHEMA!r}")
    return manifest


def verify(root: Path) -> list[str]:
    """Problems with a bundle folder: files changed, missing or added since the manifest was written."""
    root = Path(root)
    manifest = read_manifest(root)
    problems = []
    listed = manifest.get("files", {})
    for name, digest in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"missing: {name}")
        elif sha256(path) != digest:
            problems.append(f"modified: {name} (SHA-256 does not match the manifest)")
    for name in bundle_files(root):
        if name not in listed and "__pycache__" not in name:
            problems.append(f"not in the manifest: {name}")
    return problems


def check_member(member: tarfile.TarInfo) -> None:
    name = member.name
    parts = Path(name.replace("\\", "/")).parts
    if name.startswith(("/", "\\")) or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        raise BundleError(f"archive member with an absolute path: {name}")
    if ".." in parts:
        raise BundleError(f"archive member escaping the bundle with '..': {name}")
    if member.issym() or member.islnk():
        raise BundleError(f"archive member is a {'symbolic' if member.issym() else 'hard'} link: {name}")
    if not (member.isfile() or member.isdir()):
        raise BundleError(f"archive member is not a regular file or folder: {name}")


def safe_extract(archive: Path, dest: Path) -> Path:
    """Unpack a bundle archive, refusing absolute paths, '..', links and special files before writing anything."""
    dest = Path(dest)
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for member in members:
                check_member(member)
            dest.mkdir(parents=True, exist_ok=True)
            for member in members:
                target = dest / member.name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                with open(target, "wb") as out:
                    while block := source.read(1 << 20):
                        out.write(block)
                os.chmod(target, 0o644 | (0o111 if member.mode & 0o100 else 0))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BundleError(f"cannot read bundle archive {archive}: {exc}") from exc
    return dest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) == 3 and args[0] == "unpack":
        try:
            safe_extract(Path(args[1]), Path(args[2]))
        except BundleError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    print("usage: python3 bundle.py unpack ARCHIVE DEST", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
