"""Flashers: how `invoke flash` writes a board's firmware with a debug probe (pyocd, openocd, st-flash)
or through any GDB server (gdb).

Each module here registers one flasher: the program it runs, the hint for installing it, what it
checks after writing (caps), and its plan: the command lines (and a script they read), built from the
target file's [flash] table and the image. flash() checks the whole build, its signature included
(signing.check_build), before anything connects to a board; a dry run returns the plan and runs nothing.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ... import proc
from ...atomic import atomic_write
from ...bundle import BUNDLE, MANIFEST
from ...errors import BadInput
from ...hostenv import tools
from ...hostenv.tools import Tool
from ...registry import Registry
from ...signing import check_build
from ...target.profile import Target, load_target
from ..address import host_port

# The images of a firmware build (manifest "firmware" "images"): the board's memory map, or the
# emulator's (qemu-system's gdbstub, a simulator's GDB server).
IMAGES = ("board", "emulator")
SCRIPT_NAME = "flash.gdb"  # a plan's script, in the folder its commands run in


@dataclass(frozen=True)
class FlasherCaps:
    reads_back: bool  # it reads what it wrote back from the board and compares it with the image
    gdb_server: bool = False  # writes through a GDB server (--gdb-server), any image whose addresses it has


@dataclass(frozen=True)
class FlashRequest:
    target: Target
    image: Path  # the ELF image to write
    binary: Path | None  # the same as a raw image at the board's flash address; None for the emulator image
    server: tuple[str, int] | None = None  # (host, port) of the GDB server, for flashers with caps.gdb_server


@dataclass(frozen=True)
class FlashPlan:
    commands: list[list[str]]
    verifies: str  # what the commands check after writing, as `invoke flash` reports it
    script: str | None = None  # saved as SCRIPT_NAME in the commands' working folder
    timeout_s: float | None = None  # None: a probe's own tool decides how long writing may take
    what: str | None = None  # how a failure names the step; None: the program


class Flasher(Protocol):
    name: str  # the --probe value
    program: str  # the executable looked up on PATH
    install_hint: str
    caps: FlasherCaps

    def plan(self, request: FlashRequest) -> FlashPlan:
        """The command lines (and script) that write request.image or request.binary, then check it."""


FLASHERS: Registry[Flasher] = Registry("probe", __name__)
register = FLASHERS.register
names = FLASHERS.names
get = FLASHERS.get


def flasher_tools(target: Target) -> list[Tool]:
    """The programs that could write target's firmware (optional: a real board, or a GDB server, is beyond a
    build): every probe for a board with a [flash] table, gdb-multiarch for any firmware."""
    return [tools.program(flasher.program, flasher.install_hint, f"writes the firmware (--probe {flasher.name})",
                          optional=True)
            for flasher in (get(name) for name in names())
            if (target.os == "none" if flasher.caps.gdb_server else bool(target.flash))]


def flash_setting(target: Target, key: str, probe: str):
    """A key of the target's [flash] table that `probe` needs."""
    if key not in target.flash:
        raise BadInput(f"{target.path}: the [flash] table has no '{key}', which probe {probe} needs.")
    return target.flash[key]


def _flasher(target: Target, probe: str | None, image: str, gdb_server: str | None) -> Flasher:
    """The flasher for these options, once they fit together and the target."""
    if image not in IMAGES:
        raise BadInput(f"--image '{image}' is neither board nor emulator.")
    if probe is None and not target.flash:
        raise BadInput(f"target {target.name} has no [flash] table: there is no board to flash with a probe "
                       f"(a GDB server can be flashed with --probe gdb --gdb-server HOST:PORT).")
    flasher = get(probe or target.flash["default_probe"])
    if flasher.caps.gdb_server and gdb_server is None:
        raise BadInput(f"--probe {flasher.name} needs --gdb-server HOST:PORT, where the board's GDB server listens.")
    if not flasher.caps.gdb_server:
        if gdb_server is not None:
            raise BadInput(f"--gdb-server is for --probe gdb; {flasher.name} drives the probe itself.")
        if image != "board":
            raise BadInput(f"{flasher.name} writes boards only; the emulator image goes through a GDB server "
                           f"(--probe gdb --gdb-server HOST:PORT).")
        if not target.flash:
            raise BadInput(f"target {target.name} has no [flash] table: there is no board for {flasher.name}.")
    return flasher


def flash(target_name: str, out_dir: Path, probe: str | None = None, dry_run: bool = False, image: str = "board",
          gdb_server: str | None = None, allow_unsigned: bool = False) -> FlashPlan:
    """Write the firmware built in out_dir with `probe` (default: the target's), `image` "board" (the
    board's memory map) or "emulator" (through a GDB server only); return the plan that ran (its
    commands, script, and what they verified), or, when dry_run, the plan without running it. The build
    must pass signing.check_build first (signed, unless allow_unsigned)."""
    target = load_target(target_name)
    flasher = _flasher(target, probe, image, gdb_server)
    server = host_port(gdb_server, "--gdb-server", "a GDB server") if gdb_server is not None else None
    if not dry_run:
        proc.require(flasher.program, flasher.install_hint)
    bundle_dir = Path(out_dir) / BUNDLE
    if not (bundle_dir / MANIFEST).is_file():
        raise BadInput(f"{out_dir} holds no build (no {BUNDLE}/{MANIFEST}); run invoke build first.")
    # The whole build, signature included, before anything connects to a board.
    manifest = check_build(Path(out_dir), require_signed=not allow_unsigned).manifest
    if manifest["target"] != target.name or "firmware" not in manifest:
        raise BadInput(f"{out_dir} holds a build for {manifest['target']}, not firmware for {target.name}.")
    images = manifest["firmware"]["images"]
    if image not in images:
        raise BadInput(f"{out_dir} holds no {image} image: target {target.name} names no emulator.")
    binary = (bundle_dir / images["board_binary"]).resolve() if image == "board" else None
    plan = flasher.plan(FlashRequest(target, (bundle_dir / images[image]).resolve(), binary, server))
    if dry_run:
        return plan
    with tempfile.TemporaryDirectory(prefix="edgeyard-flash-") as work:
        if plan.script is not None:
            atomic_write(Path(work) / SCRIPT_NAME, plan.script)
        for argv in plan.commands:
            proc.run(argv, cwd=work, timeout_s=plan.timeout_s, what=plan.what or flasher.program,
                     install_hint=flasher.install_hint, tail_lines=1)
    return plan
