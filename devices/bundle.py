"""Deployment bundles: a manifest with the SHA-256 of every file, verification, and safe unpacking.

Standard library only, so that this file also runs on its own (``python3 bundle.py unpack ARCHIVE DEST``,
``python3 bundle.py verify DIR``) on a device that has nothing of edgex yet, and checks a bundle before any of the
bundle's own code is imported.
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


def manifest_digest(manifest: dict) -> str:
    """SHA-256 of the manifest's own fields (target, model, defaults, file hashes), without the digest itself."""
    fields = {key: value for key, value in manifest.items() if key != "digest"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(root: Path, fields: dict) -> dict:
    """Hash every file of the bundle into ``manifest.json`` (with ``fields``: target, model, defaults...)."""
    root = Path(root)
    files = {name: sha256(root / name) for name in bundle_files(root)}
    manifest = {"schema": SCHEMA, **fields, "files": files}
    manifest["digest"] = manifest_digest(manifest)
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
    if manifest.get("digest") != manifest_digest(manifest):
        problems.append(f"modified: {MANIFEST} (its fields do not match its digest)")
    listed = manifest.get("files", {})
    for name, digest in sorted(listed.items()):
        path = root / name
        if not path.is_file():
            problems.append(f"missing: {name}")
        elif sha256(path) != digest:
            problems.append(f"modified: {name} (SHA-256 does not match the manifest)")
    for name in bundle_files(root):
        if name not in listed:
            # Python loads cached bytecode before the source: a stray .pyc is code the manifest never saw.
            hint = " (bytecode: run the bundle with python -B, or delete __pycache__)" if "__pycache__" in name else ""
            problems.append(f"not in the manifest: {name}{hint}")
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
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BundleError(f"cannot read bundle archive {archive}: {reason}") from exc
    return dest


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if len(args) == 3 and args[0] == "unpack":
            safe_extract(Path(args[1]), Path(args[2]))
            return 0
        if len(args) == 2 and args[0] == "verify":
            problems = verify(Path(args[1]))
            for problem in problems:
                print(problem, file=sys.stderr)
            if problems:
                print(
                    f"error: bundle {args[1]} does not match its manifest ({len(problems)} problems)", file=sys.stderr
                )
                return 1
            print("bundle verified: every file matches the manifest")
            return 0
    except BundleError as exc:
        print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    print("usage: python3 bundle.py unpack ARCHIVE DEST | python3 bundle.py verify DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
