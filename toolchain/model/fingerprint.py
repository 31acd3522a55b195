"""A model's identity without loading it: sha256 of its file, or of a SavedModel folder's files."""

import hashlib
from pathlib import Path


def model_sha256(path: Path) -> str:
    if path.is_file():
        from ..bundle import sha256_file

        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()
