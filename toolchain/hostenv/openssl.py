"""OpenSSL's libcrypto for a Linux board's architecture, which the TVM runner of an encrypted bundle
(`invoke build --encrypt`) decrypts model.so with.

It is Debian 12's libssl-dev for that architecture (the headers and the static libcrypto.a), fetched once with
the private apt configuration (debian.py) and unpacked with `dpkg -x` into <cache>/openssl/<arch>/. The runner
links libcrypto statically, so it needs no libssl on the board, nor in qemu-user's sysroot (the cross
compiler's, which has none).
"""

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import proc
from ..atomic import staged_dir
from ..errors import BadInput, BuildError, MissingTool
from ..paths import cache_dir
from .debian import KEYRING, AptConfig

PACKAGE = "libssl-dev"
DEBIAN_ARCHES = {"aarch64": "arm64", "x86_64": "amd64", "armv7l": "armhf"}  # Debian's names
_STAMP = "openssl.json"


@dataclass
class Libcrypto:
    include_dirs: list[Path]  # usr/include and its architecture's folder (opensslconf.h)
    static_library: Path  # libcrypto.a
    version: str  # the Debian package's


def _current(root: Path) -> Libcrypto | None:
    stamp = root / _STAMP
    if not stamp.is_file():
        return None
    found = sorted((root / "usr/lib").glob("*/libcrypto.a"))
    if not found:
        return None
    multiarch = found[0].parent.name  # aarch64-linux-gnu, ...
    return Libcrypto([root / "usr/include", root / "usr/include" / multiarch], found[0],
                     json.loads(stamp.read_text())["version"])


def libcrypto(arch: str, progress: Callable[[str], None]) -> Libcrypto:
    """libcrypto's headers and static library for `arch`, fetched the first time (seconds)."""
    if arch not in DEBIAN_ARCHES:
        raise BadInput(f"no Debian build of OpenSSL is known for architecture '{arch}' (known: "
                       f"{', '.join(DEBIAN_ARCHES)}).")
    root = cache_dir() / "openssl" / arch
    existing = _current(root)
    if existing is not None:
        return existing
    for tool in ("apt-get", "dpkg"):
        if shutil.which(tool) is None:
            raise MissingTool(tool, "OpenSSL for the board comes from Debian packages; run this on Debian 12.")
    if not Path(KEYRING).is_file():
        raise MissingTool(KEYRING, "install it with: apt-get install debian-archive-keyring.")
    progress(f"fetching Debian's {PACKAGE}:{DEBIAN_ARCHES[arch]} (OpenSSL's libcrypto for {arch})")
    root.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root.parent) as work, staged_dir(root) as staged:
            apt = AptConfig(Path(work) / "apt", DEBIAN_ARCHES[arch])
            apt.run("apt-get", "update")
            apt.run("apt-get", "download", PACKAGE, cwd=Path(work))
            (deb,) = Path(work).glob(f"{PACKAGE}_*.deb")
            proc.run(["dpkg", "-x", deb, staged], what=f"dpkg -x {deb.name}", tail_lines=4)
            version = deb.name.split("_")[1]
            (staged / _STAMP).write_text(json.dumps({"package": PACKAGE, "version": version, "arch": arch}) + "\n")
    except BuildError as err:
        raise BuildError(f"fetching OpenSSL for {arch} failed: {err}") from err
    fetched = _current(root)
    if fetched is None:
        raise BuildError(f"Debian's {PACKAGE}:{DEBIAN_ARCHES[arch]} holds no libcrypto.a.")
    return fetched
