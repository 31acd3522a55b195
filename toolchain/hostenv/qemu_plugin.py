"""The instruction-counting qemu plugin (templates/qemu_insn_count.c.j2), built for the installed qemu.

One plugin, two uses: qemu-user loads it to count a program's instructions; qemu-system loads it with
two marker addresses to count the harness firmware's timed inferences by instruction class (the
classes of toolchain/target/cycle_model.py).

Debian's qemu-user loads TCG plugins (-plugin) but ships none, nor the plugin API header; the
header comes from the qemu source package of the same upstream version (`apt-get source
--download-only`, about 24 MB, fetched once), and gcc builds the plugin into the cache:

    python -m toolchain.hostenv qemu-plugin

Building it again is a no-op while qemu's version and the plugin's source stay the same. The plugin
API is the same in every qemu binary of a version, so the one .so serves qemu-aarch64, qemu-arm
(32-bit ARM) and qemu-system-arm alike (Debian builds qemu-user and qemu-system-arm from one source
package, so their versions match).
"""

import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from .. import proc
from ..atomic import atomic_file
from ..errors import BuildError, MissingTool
from ..paths import cache_dir
from ..target.cycle_model import CLASSES
from .debian import AptConfig
from .tools import Tool

Progress = Callable[[str], None]

PLUGIN = "libinsn_count.so"
_NAME = f"the qemu counting plugin ({PLUGIN})"
_HEADER = "qemu-plugin.h"
_SOURCE = "insn_count.c"
_QEMU_PACKAGE = "qemu-user"  # the binary package whose emulators load the plugin


def qemu_version() -> str:
    """The installed qemu-user's source version, e.g. "1:7.2+dfsg-7+deb12u18"."""
    dpkg_query = proc.require("dpkg-query", "the counting plugin is built for Debian's qemu-user; run this on "
                              "Debian 12.")
    result = proc.run([dpkg_query, "-W", "-f=${source:Version}", _QEMU_PACKAGE], check=False)
    if result.returncode != 0 or not result.stdout:
        raise MissingTool(_QEMU_PACKAGE, "install it with: apt-get install qemu-user, or run ./bootstrap.sh.")
    return result.stdout.strip()


def _upstream(version: str) -> str:
    """"1:7.2+dfsg-7+deb12u18" -> "7.2+dfsg": what the source tarball (and its header) is made from."""
    return version.split(":", 1)[-1].rsplit("-", 1)[0]


def _plugin_dir() -> Path:
    return cache_dir() / "qemu-plugin" / _upstream(qemu_version())


def _api_version(header: Path) -> str:
    return re.search(r"#define QEMU_PLUGIN_VERSION (\d+)", header.read_text()).group(1)


def _source(api_version: str) -> str:
    from ..codegen import render_text

    return render_text("qemu_insn_count.c.j2", api_version=api_version, classes=CLASSES)


def _is_current(folder: Path) -> bool:
    """Whether folder holds the plugin built from the source this edgeyard renders for its qemu's header."""
    header, source, plugin = folder / _HEADER, folder / _SOURCE, folder / PLUGIN
    return header.is_file() and plugin.is_file() and source.is_file() and \
        source.read_text() == _source(_api_version(header))


def find() -> Path:
    """The plugin built for the installed qemu, building nothing: MissingTool when it is missing or stale."""
    folder = _plugin_dir()
    if not _is_current(folder):
        raise MissingTool(_NAME, "build it with: python -m toolchain.hostenv "
                          "qemu-plugin, or run ./bootstrap.sh (a build makes it on first use, downloading qemu's "
                          "Debian source package).")
    return folder / PLUGIN


def tool() -> Tool:
    return Tool(_NAME, "counts instructions per inference under qemu",
                lambda: f"{find()} (qemu {_upstream(qemu_version())})")


def build(progress: Progress = lambda _: None) -> Path:
    """The plugin built for the installed qemu: built now when missing or stale, else only found."""
    folder = _plugin_dir()
    header = folder / _HEADER
    if not header.is_file():
        _fetch_header(header, progress)
    source, plugin = folder / _SOURCE, folder / PLUGIN
    if _is_current(folder):
        progress(f"the instruction-counting qemu plugin is present in {plugin}")
        return plugin
    api_version = _api_version(header)
    rendered = _source(api_version)
    gcc = proc.require("gcc", "install it with: apt-get install gcc, or run ./bootstrap.sh.")
    progress(f"compiling {PLUGIN} against the qemu {_upstream(qemu_version())} plugin API (version {api_version})")
    # The source takes its place after the plugin and only when it compiled: a failed build is tried again.
    with atomic_file(source) as new_source, atomic_file(plugin) as partial:
        new_source.write_text(rendered)
        proc.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", f"-I{folder}", "-o", partial, new_source],
                 what=f"gcc {_SOURCE}", tail_lines=4)
    return plugin


def plugin_option(count_file: Path, **settings: str) -> str:
    """-plugin's argument for the plugin built for this qemu: where it writes its count, and its settings
    (begin=, end=: count by class between two marker addresses). qemu's option syntax reads ",," as a comma."""
    words = [str(build()), f"out={count_file}", *(f"{key}={value}" for key, value in settings.items())]
    return ",".join(word.replace(",", ",,") for word in words)


def _fetch_header(header: Path, progress: Progress) -> None:
    """Extract include/qemu/qemu-plugin.h from the Debian qemu source package of qemu-user's upstream version."""
    upstream = _upstream(qemu_version())
    header.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeyard-qemu-source-") as work:
        apt = AptConfig(Path(work) / "apt", architecture=None)
        progress("fetching the Debian source package lists")
        try:
            apt.run("apt-get", "update")
            progress(f"downloading the qemu source package (about 24 MB) for {_HEADER}")
            apt.run("apt-get", "source", "--download-only", "qemu", cwd=Path(work))
        except BuildError as err:
            raise BuildError(f"could not download the qemu source package for the plugin header: {err}") from err
        tarballs = sorted(Path(work).glob("qemu_*.orig.tar.*"))
        if not tarballs or not tarballs[0].name.startswith(f"qemu_{upstream}.orig"):
            found = tarballs[0].name if tarballs else "no upstream tarball"
            raise BuildError(f"Debian's qemu source package ({found}) is not qemu-user's upstream version {upstream}; "
                             "upgrade qemu-user (apt-get install --only-upgrade qemu-user) and try again.")
        proc.run(["tar", "-xf", tarballs[0], "-C", work, "--wildcards", "--no-anchored", f"include/qemu/{_HEADER}"],
                 what=f"tar -x {_HEADER}", tail_lines=4)
        extracted = next(Path(work).glob(f"qemu-*/include/qemu/{_HEADER}"))
        with atomic_file(header) as partial:  # its presence means the fetch is done
            shutil.copyfile(extracted, partial)
