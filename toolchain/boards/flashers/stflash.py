"""st-flash (stlink-tools, ST-Link probes): writes the raw image at the flash base address, then resets."""

from pathlib import Path

from ...target.profile import Target
from . import flash_setting, register


class StflashFlasher:
    name = "st-flash"
    program = "st-flash"
    install_hint = "install it with: apt-get install stlink-tools."

    def commands(self, target: Target, image: Path, binary: Path) -> list[list[str]]:
        address = flash_setting(target, "address", self.name)
        return [[self.program, "--reset", "write", str(binary), f"0x{address:08x}"]]


register(StflashFlasher())
