"""Trust in a build folder: the one door for checking one before it is used, run, copied or flashed.

A build folder holds bundle/ (its manifest.json lists every other bundle file's size and sha256),
report.json, report.md, provenance.json (an in-toto Statement with an SLSA provenance predicate: what
was built from what, with which tools) and, when a signing key exists, signature.json: an Ed25519
signature over the sha256 of the manifest and of the provenance, which therefore covers every file of
the bundle. An unsigned build records the same two sha256 in report.json ("trust"), which catches a
damaged or edited file but not a forger who edits report.json too; only a signature does that.

The signing key is an Ed25519 private key in PEM: --signing-key, else $EDGEYARD_SIGNING_KEY, else the
per-user default (<config>/edgeyard/signing-key.pem, made by `invoke keygen`). It never lives in a build
folder. Checking a signature needs the public half: of the same key, or a .pub file given to verify.
"""

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from .atomic import atomic_write
from .bundle import BUNDLE, MANIFEST, REPORT, file_problem, is_build_folder, sha256_file, verify
from .errors import BadInput, BuildError

SIGNATURE = "signature.json"
PROVENANCE = "provenance.json"
KEY_ENV = "EDGEYARD_SIGNING_KEY"
SIGNATURE_FORMAT = "edgeyard-signature-v1"
SIGNED = (f"{BUNDLE}/{MANIFEST}", PROVENANCE)  # what the signature covers (the manifest covers the bundle)


def default_key_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config) / "edgeyard" / "signing-key.pem"


def signing_key_path(option: Path | str | None = None) -> Path | None:
    """The signing key to use: the option, else $EDGEYARD_SIGNING_KEY, else the per-user default when it
    exists; None when there is none (the build stays unsigned). A named key that is missing is BadInput."""
    named = option or os.environ.get(KEY_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise BadInput(f"{path}: signing key not found (from {'--signing-key' if option else KEY_ENV}); "
                           "make one with invoke keygen.")
        return path
    path = default_key_path()
    return path if path.is_file() else None


def _load_key(path: Path):
    """The Ed25519 key in a PEM file: private (for signing) or public."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    try:
        data = path.read_bytes()
        key = (serialization.load_pem_private_key(data, password=None) if b"PRIVATE KEY" in data
               else serialization.load_pem_public_key(data))
    except (OSError, ValueError, TypeError) as err:
        raise BadInput(f"{path}: not a readable Ed25519 key in PEM ({err}).") from None
    if not isinstance(key, (ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey)):
        raise BadInput(f"{path}: is a {type(key).__name__}, not an Ed25519 key; make one with invoke keygen.")
    return key


def _public_bytes(key) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = key.public_key() if isinstance(key, ed25519.Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def fingerprint(key_path: Path) -> str:
    """The key's short name: the first 16 hex digits of the sha256 of its raw public key."""
    return hashlib.sha256(_public_bytes(_load_key(key_path))).hexdigest()[:16]


def keygen(path: Path | None = None, force: bool = False) -> tuple[Path, Path]:
    """A new Ed25519 key: the private key at `path` (default: the per-user one; mode 600) and its public
    half beside it (.pub); refuses to replace an existing key unless `force`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = Path(path) if path else default_key_path()
    if path.exists() and not force:
        raise BadInput(f"{path} exists; a new key would orphan every build signed with it (give --force to "
                       "replace it).")
    if is_build_folder(path.parent) or path.parent.name == BUNDLE:
        raise BadInput(f"{path} is inside a build folder; keep the signing key outside every build.")
    key = ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()), mode=0o600)
    public = path.with_name(path.name.removesuffix(".pem") + ".pub")
    atomic_write(public, key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, public


def _record(root: Path, relative: str) -> dict:
    path = root / relative
    return {"path": relative, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _payload(records: list[dict]) -> bytes:
    """The bytes the signature is over: the signed files' records as canonical JSON."""
    return json.dumps({"format": SIGNATURE_FORMAT, "files": records}, sort_keys=True,
                      separators=(",", ":")).encode()


def trust_records(out_dir: Path) -> list[dict]:
    """Size and sha256 of the manifest and the provenance: report.json's "trust" files."""
    return [_record(out_dir, relative) for relative in SIGNED]


def sign(out_dir: Path, key_path: Path) -> str:
    """signature.json over the build's manifest and provenance; returns the key's fingerprint."""
    from cryptography.hazmat.primitives.asymmetric import ed25519

    key = _load_key(key_path)
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise BadInput(f"{key_path}: is a public key; signing needs the private key.")
    resolved = Path(out_dir).resolve()
    if resolved in Path(key_path).resolve().parents:
        raise BadInput(f"{key_path} is inside the build folder {out_dir}; keep the signing key outside every build.")
    records = trust_records(out_dir)
    signature = {"format": SIGNATURE_FORMAT, "algorithm": "ed25519",
                 "public_key": base64.b64encode(_public_bytes(key)).decode(), "files": records,
                 "signature": base64.b64encode(key.sign(_payload(records))).decode()}
    atomic_write(Path(out_dir) / SIGNATURE, _signature_text(signature))
    return fingerprint(key_path)


def _signature_text(signature: dict) -> str:
    """signature.json's exact text: a byte changed anywhere in it (even harmless whitespace) is refused."""
    return json.dumps(signature, indent=2) + "\n"


@dataclass
class Trust:
    """What check_build found: every file intact, and who signed the build (None: unsigned)."""

    out_dir: Path
    manifest: dict
    files: int
    signer: str | None


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise BuildError(f"{path} is not readable JSON ({err}); rebuild it.") from None
    if not isinstance(data, dict):
        raise BuildError(f"{path} is not what edgeyard wrote; rebuild it.")
    return data


def _check_records(out_dir: Path, records, source: Path) -> None:
    if not isinstance(records, list) or {r.get("path") for r in records if isinstance(r, dict)} != set(SIGNED):
        raise BuildError(f"{source} does not list {' and '.join(SIGNED)}; rebuild the build.")
    for record in records:
        problem = file_problem(out_dir, record)
        if problem:
            raise BuildError(f"{out_dir / record['path']} {problem.replace(MANIFEST, source.name)}; "
                             "the build was altered after it was made.")


def _check_signature(out_dir: Path, public_key: Path | None) -> str:
    """The signer's fingerprint once signature.json verifies (with `public_key`, else with the configured
    signing key's public half, else with the key it names); BuildError naming what does not."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ed25519

    path = out_dir / SIGNATURE
    signature = _read_json(path)
    if path.read_text() != _signature_text(signature):
        raise BuildError(f"{path} is not as edgeyard wrote it; the build was altered.")
    _check_records(out_dir, signature.get("files"), path)
    try:
        embedded = base64.b64decode(signature["public_key"], validate=True)
        signer = ed25519.Ed25519PublicKey.from_public_bytes(embedded)
        signer.verify(base64.b64decode(signature["signature"], validate=True), _payload(signature["files"]))
    except (KeyError, TypeError, ValueError, InvalidSignature):
        raise BuildError(f"{path}: the signature does not match the files it lists; the build was altered.") from None
    trusted_path = public_key or signing_key_path()
    if trusted_path is not None and _public_bytes(_load_key(Path(trusted_path))) != embedded:
        raise BuildError(f"{path}: signed by key {hashlib.sha256(embedded).hexdigest()[:16]}, not by "
                         f"{trusted_path} ({fingerprint(Path(trusted_path))}).")
    return hashlib.sha256(embedded).hexdigest()[:16]


def check_build(out_dir: Path, public_key: Path | None = None, require_signed: bool = False) -> Trust:
    """The build in out_dir once every bundle file matches the manifest (none unlisted), and the manifest
    and the provenance match the signature (signed) or report.json (unsigned). BuildError naming the first
    altered file; BadInput when out_dir holds no build, or when require_signed and it is unsigned."""
    out_dir = Path(out_dir)
    if not is_build_folder(out_dir):
        raise BadInput(f"{out_dir} holds no edgeyard build (no {REPORT} or {BUNDLE}/{MANIFEST}); run invoke build.")
    manifest = verify(out_dir / BUNDLE)
    if (out_dir / SIGNATURE).exists():
        signer = _check_signature(out_dir, public_key)
    elif require_signed:
        raise BadInput(f"{out_dir} is not signed (no {SIGNATURE}); make a key with invoke keygen and build "
                       "again, or give --allow-unsigned.")
    else:
        report = _read_json(out_dir / REPORT)
        _check_records(out_dir, report.get("trust", {}).get("files"), out_dir / REPORT)
        signer = None
    return Trust(out_dir, manifest, len(manifest["files"]) + len(SIGNED), signer)


def provenance(model_name: str, model_sha256: str, target_name: str, target_sha256: str, backend: str,
               options: dict, versions: dict, subjects: list[dict]) -> dict:
    """An in-toto Statement (v1) with an SLSA provenance (v1) predicate: the bundle files as subjects, the
    model and the target profile as resolved dependencies, the options and tool versions. No dates or
    paths: two builds of the same inputs state the same thing."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": record["path"], "digest": {"sha256": record["sha256"]}} for record in subjects],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://github.com/edgeyard/edgeyard/build/v1",
                "externalParameters": {"target": target_name, "backend": backend, "options": options},
                "resolvedDependencies": [
                    {"name": model_name, "digest": {"sha256": model_sha256}},
                    {"name": f"targets/{target_name}.toml", "digest": {"sha256": target_sha256}},
                ],
            },
            "runDetails": {"builder": {"id": "https://github.com/edgeyard/edgeyard", "version": versions}},
        },
    }


def write_provenance(out_dir: Path, statement: dict) -> None:
    atomic_write(Path(out_dir) / PROVENANCE, json.dumps(statement, indent=2, sort_keys=True) + "\n")
