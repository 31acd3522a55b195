"""Encryption at rest: the model file of a Linux bundle stored AES-256-GCM encrypted (`invoke build --encrypt KEY`).

The key is 32 random bytes in a file of its own (`invoke keygen --aes FILE`). It never enters a build folder:
the build encrypts with it and validates with it, and the board's runner reads it from the file
$EDGEYARD_MODEL_KEY names (else /etc/edgeyard/model.key) and decrypts in memory at load time.

An encrypted file is MAGIC, a 12-byte nonce, the ciphertext and GCM's 16-byte tag; the file's bundle name is
the associated data, so a ciphertext cannot pass for another file. The nonce is derived from the key and the
content (HMAC-SHA256, as in SIV constructions), so builds stay byte-identical. GCM is safe as long as one
nonce never serves two different plaintexts under one key: here a nonce repeats only for the same plaintext
(same file name, same bytes), which gives the same ciphertext and reveals only that the two files are equal;
two different plaintexts share a nonce with probability about n^2 / 2^97 for n files.
"""

import hashlib
import hmac
import os
from pathlib import Path

from .atomic import atomic_write
from .errors import BadInput

ALGORITHM = "AES-256-GCM"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
MAGIC = b"EYGCM\x00\x01\x00"  # "edgeyard AES-GCM", format 1
KEY_ENV = "EDGEYARD_MODEL_KEY"  # on the board (and in validation): the key file's path
BOARD_KEY_PATH = "/etc/edgeyard/model.key"  # where the board's runner looks without KEY_ENV


def read_key(path: Path) -> bytes:
    """The AES-256 key in `path`: exactly 32 bytes (BadInput otherwise)."""
    try:
        key = Path(path).read_bytes()
    except OSError as err:
        raise BadInput(f"{path}: cannot read the encryption key ({err.strerror}); make one with "
                       "invoke keygen --aes FILE.") from None
    if len(key) != KEY_BYTES:
        raise BadInput(f"{path} holds {len(key)} bytes, not a {KEY_BYTES}-byte AES-256 key; make one with "
                       "invoke keygen --aes FILE.")
    return key


def key_id(path: Path) -> str:
    """The key's short name for the cache key (another key: another build); it reveals nothing of the key."""
    return hashlib.sha256(b"edgeyard model key\x00" + read_key(path)).hexdigest()[:16]


def keygen(path: Path, force: bool = False) -> Path:
    """32 random bytes in `path` (mode 600); refuses to replace a key unless `force`."""
    path = Path(path)
    if path.exists() and not force:
        raise BadInput(f"{path} exists; a new key would make every bundle encrypted with it unreadable (give "
                       "--force to replace it).")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, os.urandom(KEY_BYTES), mode=0o600)
    return path


def check_outside(key_path: Path, out_dir: Path) -> None:
    """BadInput when the key file lies inside the build folder it would encrypt."""
    if Path(out_dir).resolve() in Path(key_path).resolve().parents:
        raise BadInput(f"{key_path} is inside the build folder {out_dir}; keep the encryption key outside every "
                       "build.")


def encrypt_file(path: Path, key_path: Path) -> None:
    """Replace the file at `path` with its encryption (MAGIC, nonce, ciphertext and tag)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    key, plain, name = read_key(key_path), path.read_bytes(), path.name.encode()
    nonce = hmac.new(key, b"nonce\x00" + name + b"\x00" + plain, hashlib.sha256).digest()[:NONCE_BYTES]
    atomic_write(path, MAGIC + nonce + AESGCM(key).encrypt(nonce, plain, name))


def runner_env(key_path: Path | None) -> dict[str, str]:
    """The environment a run of the bundle on this machine needs: where the key is (none for a plain bundle)."""
    return {KEY_ENV: str(Path(key_path).resolve())} if key_path else {}


def manifest_record(files: list[str]) -> dict:
    """The manifest's "encryption": what is encrypted and where the board's runner finds the key (never the key)."""
    return {"algorithm": ALGORITHM, "files": files, "key_env": KEY_ENV, "board_key_path": BOARD_KEY_PATH}


def runner_context() -> dict:
    """What a generated runner needs to read and decrypt an encrypted file (templates: `encryption`)."""
    return {"key_env": KEY_ENV, "board_key_path": BOARD_KEY_PATH, "magic": repr(MAGIC), "magic_bytes": list(MAGIC),
            "key_bytes": KEY_BYTES, "nonce_bytes": NONCE_BYTES, "tag_bytes": TAG_BYTES}
