"""The emulated board userland: a Debian 12 (bookworm) root filesystem for a Linux board's
architecture, with python3.11 and the target-architecture wheels the Python backends run on.

Raspberry Pi OS is Debian 12, so a bundle that runs here under qemu-user runs against the same
C library, Python and wheels as on the board. The userland is built once per architecture, without
root or a chroot: the Debian packages come from `apt-get download` with a private apt
configuration for that architecture and are unpacked with `dpkg -x` (no maintainer scripts run);
the wheels are the manylinux builds of the numpy, ai-edge-litert and onnxruntime versions this
machine validates against, installed with pip into the userland's dist-packages:

    python -m toolchain.hostenv userland aarch64

It lives in <cache>/userland/<arch>/rootfs; userland.json beside it records what went in, its
size and its build time, so building it again is a no-op. Each board sees it through its own
folder boards/<target>/ (links to the rootfs plus the board's /proc/cpuinfo), which runners pass
to qemu-user as -L.
"""

import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .. import proc
from ..atomic import staged_dir
from ..errors import BadInput, BuildError, MissingTool
from ..paths import cache_dir
from ..target.profile import Target
from .debian import KEYRING, RELEASE, AptConfig
from .tools import Tool

Progress = Callable[[str], None]

# The packages asked for; their dependencies come along (Depends and Pre-Depends, no Recommends).
ROOT_PACKAGES = ("python3.11", "libstdc++6")
# Needed only by maintainer scripts, which `dpkg -x` never runs; leaving them out (and what only
# they pull in) keeps Perl and dpkg itself out of the userland.
EXCLUDED_PACKAGES = frozenset({"debconf", "dpkg", "install-info", "tar", "perl-base", "perl", "mailcap",
                               "mime-support"})
# Distributions installed from PyPI, at the versions installed here (what validation compares with).
WHEELS = ("numpy", "ai-edge-litert", "onnxruntime")
PYTHON = "usr/bin/python3.11"
SITE_PACKAGES = "usr/lib/python3/dist-packages"  # on Debian's sys.path, as on the board
_STAMP = "userland.json"
_FORMAT = 2  # bump when the way a userland is assembled changes


def _manylinux(machine: str) -> tuple[str, ...]:
    # pip does not widen an explicit --platform to older glibc versions: list those bookworm (2.36) runs.
    return (*(f"manylinux_2_{minor}_{machine}" for minor in range(36, 16, -1)), f"manylinux2014_{machine}")


@dataclass(frozen=True)
class Arch:
    debian: str  # Debian's name for the architecture
    wheel_platforms: tuple[str, ...]  # pip platform tags of its manylinux wheels


# Architectures with a userland. 32-bit ARM (armv7l) has none: PyPI carries no armv7 wheels of
# ai-edge-litert or onnxruntime (nor numpy), so the Python backends cannot run there.
ARCHES = {"aarch64": Arch(debian="arm64", wheel_platforms=_manylinux("aarch64"))}


@dataclass
class Userland:
    arch: str
    rootfs: Path
    bytes: int  # size of the unpacked rootfs
    build_seconds: float  # how long the build that made it took

    @property
    def python(self) -> Path:
        return self.rootfs / PYTHON


def _arch(arch: str) -> Arch:
    if arch not in ARCHES:
        raise BadInput(f"no emulated userland exists for architecture '{arch}' (known: {', '.join(ARCHES)}); "
                       "PyPI has no wheels of the Python runtimes for it.")
    return ARCHES[arch]


def userland_dir(arch: str) -> Path:
    return cache_dir() / "userland" / arch


def wheel_versions() -> dict[str, str]:
    """The versions of WHEELS installed here; the userland gets the same ones."""
    return {dist: importlib.metadata.version(dist) for dist in WHEELS}


def _spec(arch: str) -> dict:
    """Everything a userland is decided by: when it changes, the userland is rebuilt."""
    return {"format": _FORMAT, "arch": arch, "debian": RELEASE, "packages": list(ROOT_PACKAGES),
            "excluded": sorted(EXCLUDED_PACKAGES), "wheels": wheel_versions()}


def _current(arch: str) -> Userland | None:
    root = userland_dir(arch)
    stamp = root / _STAMP
    if not stamp.is_file():
        return None
    record = json.loads(stamp.read_text())
    if record.get("spec") != _spec(arch) or not (root / "rootfs" / PYTHON).is_file():
        return None
    return Userland(arch, root / "rootfs", record["bytes"], record["build_seconds"])


def find(arch: str) -> Userland | None:
    """The current userland for `arch`, or None when it has not been built (or is out of date)."""
    _arch(arch)
    return _current(arch)


def tool(arch: str) -> Tool:
    """The `arch` userland as a Tool: found when built and current (this builds nothing)."""
    name = f"the emulated {arch} userland"

    def locate() -> str:
        found = find(arch)
        if found is None:
            raise MissingTool(name, f"build it with: python -m toolchain.hostenv userland {arch}, or run "
                              "./bootstrap.sh (a build makes it on first use, in minutes).")
        return f"{found.rootfs} ({found.bytes / 1e6:.0f} MB)"

    return Tool(name, "runs the Python bundles (LiteRT, ONNX Runtime) under qemu-user", locate)


def build(arch: str, progress: Progress = lambda _: None) -> Userland:
    """Build the userland for `arch` unless the current one is already there (then only say so)."""
    spec = _arch(arch)
    existing = _current(arch)
    if existing is not None:
        progress(f"the {arch} userland is present in {existing.rootfs} ({existing.bytes / 1e6:.0f} MB)")
        return existing
    for tool in ("apt-get", "apt-cache", "dpkg"):
        if shutil.which(tool) is None:
            raise MissingTool(tool, "the emulated userland is built from Debian packages; run this on Debian 12.")
    if not Path(KEYRING).is_file():
        raise MissingTool(KEYRING, "install it with: apt-get install debian-archive-keyring.")
    root = userland_dir(arch)
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    try:
        final, packages = _assemble(arch, spec, root, progress)
    except BuildError as err:
        raise BuildError(f"building the {arch} userland failed: {err}") from err
    size = _tree_bytes(final)
    seconds = round(time.monotonic() - started, 1)
    record = {"spec": _spec(arch), "packages": packages, "bytes": size, "build_seconds": seconds}
    (root / _STAMP).write_text(json.dumps(record, indent=2) + "\n")
    progress(f"built the {arch} userland in {final}: {size / 1e6:.0f} MB in {seconds:.0f} s")
    return Userland(arch, final, size, seconds)


def _assemble(arch: str, spec: Arch, root: Path, progress: Progress) -> tuple[Path, list[str]]:
    """Download, unpack and install into a staging folder; move it to root/rootfs when complete."""
    final = root / "rootfs"
    with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as work, staged_dir(final) as rootfs:
        apt = AptConfig(Path(work) / "apt", spec.debian)
        progress(f"fetching the {RELEASE} {spec.debian} package lists")
        apt.run("apt-get", "update")
        packages = _closure(apt, ROOT_PACKAGES)
        debs = Path(work) / "debs"
        debs.mkdir()
        progress(f"downloading {len(packages)} {spec.debian} packages ({', '.join(ROOT_PACKAGES)} and dependencies)")
        apt.run("apt-get", "download", *packages, cwd=debs)
        progress(f"unpacking them with dpkg -x into {final.name}/ (staged beside it)")
        for deb in sorted(debs.glob("*.deb")):
            proc.run(["dpkg", "-x", deb, rootfs], what=f"dpkg -x {deb.name}", tail_lines=4)
        (rootfs / "usr/bin/python3").symlink_to("python3.11")  # python3-minimal's link, without its scripts
        versions = wheel_versions()
        progress(f"installing the {arch} wheels of {', '.join(f'{d}=={v}' for d, v in versions.items())}")
        _pip_install(rootfs / SITE_PACKAGES, spec.wheel_platforms, versions)
        progress("compiling the Python files to bytecode")
        _compile_bytecode(rootfs)
    return final, packages


def board_root(target: Target, progress: Progress = lambda _: None) -> Path:
    """The folder qemu-user takes as -L for `target`: its arch's rootfs with the board's /proc/cpuinfo.

    Builds the userland first if it is missing (minutes; ./bootstrap.sh does it ahead of time).
    """
    if not (target.emulator or {}).get("cpuinfo"):
        raise BadInput(f"{target.path}: target {target.name} has no emulator.cpuinfo table, which the emulated "
                       "userland needs for the board's /proc/cpuinfo.")
    userland = build(target.arch, progress)
    view = userland_dir(target.arch) / "boards" / target.name
    (view / "proc").mkdir(parents=True, exist_ok=True)
    for entry in userland.rootfs.iterdir():
        link = view / entry.name
        if not (link.is_symlink() and link.readlink() == entry):
            link.unlink(missing_ok=True)
            link.symlink_to(entry)
    for link in view.iterdir():  # entries a rebuilt rootfs no longer has
        if link.name != "proc" and not (userland.rootfs / link.name).exists():
            link.unlink()
    from ..codegen import render

    # render() writes atomically: concurrent runs never read half a file
    render("cpuinfo.j2", view / "proc" / "cpuinfo", **target.emulator["cpuinfo"])
    return view


def _closure(apt: AptConfig, roots: tuple[str, ...]) -> list[str]:
    """The packages `roots` need, recursively (first of each alternative), minus EXCLUDED_PACKAGES."""
    wanted: set[str] = set()
    frontier = list(roots)
    while frontier:
        output = apt.run("apt-cache", "depends", "--no-recommends", "--no-suggests", "--no-conflicts",
                         "--no-breaks", "--no-replaces", "--no-enhances", *frontier)
        wanted.update(frontier)
        frontier = sorted({dep for dep in _parse_depends(output) if dep not in wanted and dep not in EXCLUDED_PACKAGES})
    return sorted(wanted)


def _parse_depends(output: str) -> set[str]:
    """Dependencies named in `apt-cache depends` output: the first of each alternative group, and the
    first provider of a virtual package ("<name>" followed by indented providers)."""
    deps: set[str] = set()
    lines = output.splitlines()
    in_alternative = False  # the previous line ended with "or the next one" ("|Depends")
    for i, line in enumerate(lines):
        stripped = line.strip()
        kind, _, name = stripped.lstrip("|").partition(": ")
        if not line.startswith(" ") or kind not in ("Depends", "PreDepends"):
            continue
        if not in_alternative:
            if name.startswith("<"):
                provider = lines[i + 1] if i + 1 < len(lines) else ""
                if provider.startswith("    ") and ":" not in provider:
                    deps.add(provider.strip())
            else:
                deps.add(name)
        in_alternative = stripped.startswith("|")
    return deps


def _pip_install(site: Path, platforms: tuple[str, ...], versions: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
            "--target", str(site), "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp"]
    for platform_tag in platforms:
        argv += ["--platform", platform_tag]
    proc.run(argv + [f"{dist}=={version}" for dist, version in versions.items()], what="pip install", tail_lines=4)


def _compile_bytecode(rootfs: Path) -> None:
    """Write the .pyc files Debian's maintainer scripts (and pip, told --no-compile) would have.

    Without them the first run under emulation compiles and writes them, so two runs would not
    execute the same instructions. This interpreter is Python 3.11 too: its bytecode is the same.
    """
    folders = [str(rootfs / "usr/lib/python3.11"), str(rootfs / SITE_PACKAGES)]
    # The exit status is 1 whenever some file does not compile (lib2to3's Python 2 test data):
    # those are never imported, so it is not checked.
    proc.run([sys.executable, "-m", "compileall", "-q", "-q", "-j", "0", *folders], check=False)


def _tree_bytes(root: Path) -> int:
    return sum((Path(folder) / name).lstat().st_size for folder, _, files in os.walk(root) for name in files)
