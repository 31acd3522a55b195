"""Flashers: how `invoke flash` writes a board's firmware with a debug probe (pyocd, openocd, st-flash).

Each module here registers one probe tool: the program it runs, the hint for installing it, and the
command lines, built from the target file's [flash] table. flash() checks the image against the
build's manifest before anything is written; a dry run returns the command lines and runs nothing.
"""

import shutil
from pathlib import Path
from typing import Protocol

from ... import proc
from ...bundle import BUNDLE, MANIFEST, file_problem, read_manifest
from ...errors import BadInput, MissingTool
from ...registry import Registry
from ...signing import check_build
from ...target.profile import Target, load_target


class Flasher(Protocol):
    name: str  # the --probe value
    program: str  # the executable looked up on PATH
    install_hint: str

    def commands(self, target: Target, image: Path, binary: Path) -> list[list[str]]:
        """The command lines that write `image` (ELF) or `binary` (raw, for tools that need one)."""


FLASHERS: Registry[Flasher] = Registry("probe", __name__)
register = FLASHERS.register
names = FLASHERS.names
get = FLASHERS.get

def flash_setting(target: Target, key: str, probe: str):
    """A key of the target's [flash] table that `probe` needs."""
    if key not in target.flash:
        raise BadInput(f"{target.path}: the [flash] table has no '{key}', which probe {probe} needs.")
    return target.flash[key]


def _checked_image(bundle_dir: Path, manifest: dict, role: str) -> Path:
    """The firmware file with `role` ("board", "board_binary"), if it is the one the build made."""
    name = manifest["firmware"]["images"][role]
    record = next((f for f in manifest["files"] if f["path"] == name), None)
    path = bundle_dir / name
    if record is None or file_problem(bundle_dir, record):
        raise BadInput(f"{path} is missing or is not the image the build made (its sha256 differs from "
                       f"{bundle_dir / MANIFEST}); build again.")
    return path.resolve()


def flash(target_name: str, out_dir: Path, probe: str | None = None, dry_run: bool = False,
          allow_unsigned: bool = False) -> list[list[str]]:
    """Write the firmware built in out_dir to the board with `probe` (default: the target's); return the
    command lines run, or only the ones that would run when dry_run. The build must pass
    signing.check_build first (signed, unless allow_unsigned)."""
    target = load_target(target_name)
    if not target.flash:
        raise BadInput(f"target {target.name} has no [flash] table: there is no board to flash.")
    flasher = get(probe or target.flash["default_probe"])
    if not dry_run and shutil.which(flasher.program) is None:
        raise MissingTool(flasher.program, flasher.install_hint)
    bundle_dir = Path(out_dir) / BUNDLE
    if not (bundle_dir / MANIFEST).is_file():
        raise BadInput(f"{out_dir} holds no build (no {BUNDLE}/{MANIFEST}); run invoke build first.")
    check_build(Path(out_dir), require_signed=not allow_unsigned)
    manifest = read_manifest(bundle_dir)
    if manifest["target"] != target.name or "firmware" not in manifest:
        raise BadInput(f"{out_dir} holds a build for {manifest['target']}, not firmware for {target.name}.")
    commands = flasher.commands(target, _checked_image(bundle_dir, manifest, "board"),
                                _checked_image(bundle_dir, manifest, "board_binary"))
    if dry_run:
        return commands
    for argv in commands:
        proc.run(argv, what=flasher.program, install_hint=flasher.install_hint, tail_lines=1)
    return commands
