"""OpenOCD: programs, verifies and resets through the board's configuration script."""

from pathlib import Path

from ...errors import BadInput
from ...target.profile import Target
from . import flash_setting, register


class OpenocdFlasher:
    name = "openocd"
    program = "openocd"
    install_hint = "install it with: apt-get install openocd."

    def commands(self, target: Target, image: Path, binary: Path) -> list[list[str]]:
        config = flash_setting(target, "openocd_config", self.name)
        if any(c in str(image) for c in "{}\\"):  # they would end or escape the Tcl quoting below
            raise BadInput(f"{image}: openocd cannot be given a path holding braces or backslashes; build into "
                           f"another --out folder.")
        # Braces quote the path for OpenOCD's Tcl, spaces included.
        return [[self.program, "-f", config, "-c", f"program {{{image}}} verify reset exit"]]


register(OpenocdFlasher())
