"""pyOCD (CMSIS-DAP, ST-Link, J-Link probes): loads the ELF image; the device comes from its CMSIS pack."""

from pathlib import Path

from ...target.profile import Target
from . import flash_setting, register


class PyocdFlasher:
    name = "pyocd"
    program = "pyocd"
    install_hint = "install it with: pip install pyocd, then the device's pack: pyocd pack install <pyocd_target>."

    def commands(self, target: Target, image: Path, binary: Path) -> list[list[str]]:
        return [[self.program, "load", "--target", flash_setting(target, "pyocd_target", self.name), str(image)]]


register(PyocdFlasher())
