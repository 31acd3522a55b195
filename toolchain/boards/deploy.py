"""Deploy a built bundle to a Linux board over SSH.

Before anything is copied, every file of the bundle is checked against manifest.json (size and
sha256), and a file the manifest does not list is refused: what reaches the board is exactly what
was built and validated. The copy goes to a sibling folder, is checked again on the board with
sha256sum, and only then replaces the board's previous copy; a board that already has this exact
bundle is left alone.

    deploy(Path("build/rpi4/digits_cnn/tvm"), "pi@raspberrypi.local")
    -> ~/edgeyard/rpi4/digits_cnn/tvm on the board; run it there with ./run.sh IN OUT 1 0 0
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..bundle import BUNDLE, MANIFEST, sha256_file, verify
from ..console import Progress, quiet
from ..errors import BadInput, BuildError
from ..signing import check_build
from .ssh import SshLink, remote_path

REMOTE_ROOT = "edgeyard"  # under the login folder on the board


@dataclass
class Deployment:
    host: str
    remote_dir: str  # relative to the login folder on the board
    files: int
    bytes: int
    copied: bool  # False when the board already had this exact bundle


def default_remote_dir(out_dir: Path) -> str:
    """edgeyard/<target>/<model-stem>/<backend> for the build in out_dir, from its report.json."""
    report = json.loads((out_dir / "report.json").read_text())
    stem = Path(report["model"]["path"]).name.split(".")[0]
    parts = [re.sub(r"[^A-Za-z0-9._+-]", "_", part) for part in (report["target"], stem, report["backend"])]
    return "/".join([REMOTE_ROOT, *parts])


def deploy(out_dir: Path, host: str, port: int | None = None, identity: Path | None = None,
           known_hosts: Path | None = None, remote_dir: str | None = None,
           progress: Progress = quiet, allow_unsigned: bool = False) -> Deployment:
    """Copy the bundle of the build in `out_dir` to the board at `host` (see the module's docstring), once
    signing.check_build passes: a signed build unless allow_unsigned."""
    out_dir = Path(out_dir)
    if not (out_dir / "report.json").is_file():
        raise BadInput(f"{out_dir} is not a build folder (no report.json): run invoke build first.")
    progress(f"checking {out_dir} (files, manifest, {'signature' if not allow_unsigned else 'signature if any'})")
    check_build(out_dir, require_signed=not allow_unsigned)
    link = SshLink(host, port, Path(identity) if identity else None, Path(known_hosts) if known_hosts else None)
    return deploy_bundle(out_dir / BUNDLE, link, remote_dir or default_remote_dir(out_dir), progress)


def deploy_bundle(bundle_dir: Path, link: SshLink, remote_dir: str, progress: Progress = quiet) -> Deployment:
    remote_dir = remote_path(remote_dir)
    progress(f"checking {bundle_dir} against its {MANIFEST}")
    manifest = verify(bundle_dir)
    files = [*manifest["files"], {"path": MANIFEST, "sha256": sha256_file(bundle_dir / MANIFEST),
                                  "bytes": (bundle_dir / MANIFEST).stat().st_size}]
    sums = "".join(f"{record['sha256']}  {record['path']}\n" for record in files)
    result = Deployment(link.host, remote_dir, len(files), sum(record["bytes"] for record in files), copied=False)
    if _matches(link, remote_dir, sums):
        progress(f"{link.host}:{remote_dir} already holds this bundle")
        return result
    staging = f"{remote_dir}.partial"
    progress(f"copying {result.files} files ({result.bytes / 1e6:.2f} MB) to {link.host}:{remote_dir}")
    link.run(["sh", "-c", 'rm -rf "$1" && mkdir -p "$(dirname "$1")"', "sh", staging])
    link.upload(bundle_dir, staging)
    if not _matches(link, staging, sums):
        raise BuildError(f"the copy on {link.host} does not match {MANIFEST} (sha256sum --check failed in {staging}).")
    link.run(["sh", "-c", 'rm -rf "$1" && mv "$2" "$1"', "sh", remote_dir, staging])
    result.copied = True
    return result


def _matches(link: SshLink, remote_dir: str, sums: str) -> bool:
    """Whether the board's remote_dir holds exactly the files with these sha256 sums."""
    check = link.run(["sh", "-c", 'cd "$1" 2>/dev/null && sha256sum --check --quiet --strict', "sh", remote_dir],
                     stdin=sums, check=False)
    return check.returncode == 0
