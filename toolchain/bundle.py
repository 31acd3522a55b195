"""The bundle: what a backend leaves in the build folder, self-contained enough to copy to the board.

Every bundle, whatever its backend, is run the same way, so runners (host, qemu-user, later ssh)
never need to know which backend made it:

    <entry argv...> IN_DIR OUT_DIR SAMPLES WARMUP REPEAT

- IN_DIR/input<i>.bin holds SAMPLES consecutive tensors for model input i: raw little-endian,
  C order, in the input's dtype and shape as listed in the manifest.
- The program writes OUT_DIR/output<j>.bin the same way for every model output.
- When REPEAT > 0 it then runs sample 0 WARMUP times untimed and REPEAT times timed (inference
  only, not loading), writing one integer of nanoseconds per line to OUT_DIR/timings_ns.txt.
- Exit status 0 on success; otherwise a message on stderr.

`run.sh` in the bundle wraps the entry for people on the board: `./run.sh IN OUT 1 0 0`.
Entry argv items naming bundle files start with "./" (["./runner"], ["python3", "./run_litert.py"]).
manifest.json records the entry, the tensors and every file's size and sha256.
"""

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from .atomic import atomic_write
from .errors import BadInput, BuildError

BUNDLE = "bundle"  # the bundle's folder inside a build folder
MANIFEST = "manifest.json"
REPORT = "report.json"  # beside bundle/ in a build folder


def is_build_folder(folder: Path) -> bool:
    """Whether `folder` holds an edgeyard build (its report or its bundle's manifest): the only kind of
    existing folder a build may replace."""
    return (folder / REPORT).is_file() or (folder / BUNDLE / MANIFEST).is_file()

# How the entry program runs: a native executable, a script for the board's python3, or a
# bare-metal firmware image that takes the protocol's arguments over semihosting.
ENTRY_KINDS = ("native", "python", "firmware")


@dataclass
class Entry:
    kind: str  # one of ENTRY_KINDS
    argv: list[str]  # relative to the bundle folder, e.g. ["./runner"] or ["python3", "run_litert.py"]
    arch: str  # architecture the entry needs: "x86_64", "aarch64"; "any" for a python script
    env: dict[str, str] = field(default_factory=dict)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_records(bundle_dir: Path) -> list[dict]:
    """Size and sha256 of every file in the bundle except the manifest itself, sorted by path."""
    records = []
    for path in sorted(p for p in bundle_dir.rglob("*") if p.is_file() and p.name != MANIFEST):
        records.append(
            {"path": str(path.relative_to(bundle_dir)), "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        )
    return records


def write_manifest(bundle_dir: Path, backend: str, target: str, entry: Entry, inputs: list, outputs: list, extra: dict | None = None) -> dict:
    manifest = {
        "backend": backend,
        "target": target,
        "entry": {"kind": entry.kind, "argv": entry.argv, "arch": entry.arch, "env": entry.env},
        "inputs": [t.to_dict() for t in inputs],
        "outputs": [t.to_dict() for t in outputs],
        "files": file_records(bundle_dir),
        **(extra or {}),
    }
    atomic_write(bundle_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def write_run_script(bundle_dir: Path, backend: str, target: str, entry: Entry) -> None:
    """run.sh: the entry for people on the board; bundle files in argv are written "./name"."""
    from .codegen import render

    render("run.sh.j2", bundle_dir / "run.sh", mode=0o755, backend=backend, target=target, env=entry.env,
           argv=entry.argv)


def read_manifest(bundle_dir: Path) -> dict:
    """The bundle's manifest.json; BuildError naming it when it is not a manifest (edited, truncated)."""
    path = bundle_dir / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as err:
        raise BuildError(f"{path} is not valid JSON ({err}); rebuild the bundle.") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list) or not isinstance(
            manifest.get("entry"), dict):
        raise BuildError(f"{path} is not an edgeyard manifest (no files and entry); rebuild the bundle.")
    return manifest


def entry_of(manifest: dict) -> Entry:
    return Entry(**manifest["entry"])


def file_problem(root: Path, record: dict) -> str | None:
    """Why the file a manifest record ({path, bytes, sha256}) names under root is not the one recorded;
    None when it is."""
    path = root / record["path"]
    if not path.is_file():
        return "is missing"
    if path.stat().st_size != record["bytes"] or sha256_file(path) != record["sha256"]:
        return f"does not match its sha256 in {MANIFEST}"
    return None


def verify(bundle_dir: Path) -> dict:
    """The bundle's manifest, once every file matches it and no file is unlisted; BuildError naming the
    first that does not (the one check behind the cache, deploy and flash)."""
    if not (bundle_dir / MANIFEST).is_file():
        raise BadInput(f"{bundle_dir} holds no {MANIFEST}: build the bundle first (invoke build).")
    manifest = read_manifest(bundle_dir)
    for record in manifest["files"]:
        problem = file_problem(bundle_dir, record)
        if problem:
            raise BuildError(f"{bundle_dir / record['path']} {problem}; rebuild the bundle.")
    listed = {record["path"] for record in manifest["files"]}
    for path in sorted(bundle_dir.rglob("*")):
        relative = str(path.relative_to(bundle_dir))
        if path.is_file() and relative != MANIFEST and relative not in listed:
            raise BuildError(f"{path} is not listed in {MANIFEST}; rebuild the bundle.")
    return manifest
