"""Content-addressed build cache: a build folder is reused when its key matches and its files are intact.

The key covers everything that can change the result: the model's bytes, the target profile's bytes,
the backend and options, the versions of every tool involved, and edgeyard's own code, templates and
firmware sources.
Checking it imports no heavy library, so a cache hit costs about as much as starting Python.
"""

import hashlib
import json
from pathlib import Path

from .. import __version__
from ..bundle import REPORT
from ..errors import EdgeyardError
from ..paths import FIRMWARE_DIR, PACKAGE_DIR, TEMPLATES_DIR
from ..signing import check_build


def _source_fingerprint() -> str:
    """edgeyard's own code and assets: a change to any of them is a different build."""
    digest = hashlib.sha256()
    for folder in (PACKAGE_DIR, TEMPLATES_DIR, FIRMWARE_DIR):
        for path in sorted(folder.rglob("*")):
            if path.is_file() and path.suffix != ".pyc" and "_assets" not in path.relative_to(folder).parts:
                digest.update(f"{folder.name}/{path.relative_to(folder)}".encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def build_key(model_sha256: str, target_sha256: str, backend: str, options: dict, versions: dict) -> str:
    material = {
        "edgeyard": __version__,
        "source": _source_fingerprint(),
        "model": model_sha256,
        "target": target_sha256,
        "backend": backend,
        "options": options,
        "versions": versions,
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def cached_report(out_dir: Path, key: str) -> tuple[dict | None, str | None]:
    """(the report of a finished build in out_dir made with `key`, None) when every file of it is intact
    (signing.check_build); (None, why) when such a build is there but altered; (None, None) when there is
    no such build."""
    try:
        report = json.loads((out_dir / REPORT).read_text())
    except (OSError, ValueError):
        return None, None
    if not isinstance(report, dict) or report.get("cache_key") != key:
        return None, None
    try:
        check_build(out_dir)
    except EdgeyardError as err:
        return None, str(err)
    return report, None
