"""MCUboot images: the board firmware linked for MCUboot's primary slot (after the bootloader and the image
header) and signed with imgtool, MCUboot's own tool, with the build's Ed25519 signing key
(docs/trust.md#mcuboot-images). The bootloader checks the signature, the version and the security counter
before it boots the image. A private module: it registers nothing."""

import sys
from pathlib import Path

from .. import elf, proc
from ..errors import BuildError
from ..target.profile import Target

MCUBOOT_IMAGE = "firmware-mcuboot.bin"
# imgtool's command line, in this Python (its console script need not be on PATH).
IMGTOOL = (sys.executable, "-m", "imgtool.main")
_INSTALL_HINT = "pip install imgtool (./bootstrap.sh installs it)."


def image_offset(target: Target) -> int:
    """Where the image's vector table goes, from the start of the flash: in the primary slot, after MCUboot's
    header."""
    return target.mcuboot["slot_offset"] + target.mcuboot["header_size"]


def slot_address(target: Target) -> int:
    return target.flash["address"] + target.mcuboot["slot_offset"]


def sign(image: Path, binary: Path, target: Target, key: Path, out: Path) -> dict:
    """Sign `binary` (objcopy of the ELF `image`, linked at image_offset) as an MCUboot image at `out`; what
    the manifest records of it."""
    vectors = next((s.address for s in elf.ElfImage(image).sections if s.name == ".vectors"), None)
    expected = slot_address(target) + target.mcuboot["header_size"]
    if vectors != expected:
        raise BuildError(f"{target.path}: the linker script '{target.firmware['linker_script']}' does not place the "
                         f"image at __image_offset (vector table at {'none' if vectors is None else f'{vectors:#x}'}, "
                         f"MCUboot needs {expected:#x}).")
    settings = target.mcuboot
    proc.run([*IMGTOOL, "sign", "--key", key, "--header-size", str(settings["header_size"]), "--pad-header",
              "--align", str(settings["align"]), "--version", settings["version"],
              "--security-counter", str(settings["security_counter"]), "--slot-size", str(settings["slot_size"]),
              binary, out], what="imgtool", install_hint=_INSTALL_HINT, tail_lines=5)
    return {"image": out.name, "slot_address": slot_address(target), **settings}
