"""OpenOCD: programs, verifies and resets through the board's configuration script."""

from ...errors import BadInput
from . import FlasherCaps, FlashPlan, FlashRequest, flash_setting, register


class OpenocdFlasher:
    name = "openocd"
    program = "openocd"
    install_hint = "install it with: apt-get install openocd."
    caps = FlasherCaps(reads_back=True)

    def plan(self, request: FlashRequest) -> FlashPlan:
        config = flash_setting(request.target, "openocd_config", self.name)
        if any(c in str(request.image) for c in "{}\\"):  # they would end or escape the Tcl quoting below
            raise BadInput(f"{request.image}: openocd cannot be given a path holding braces or backslashes; build "
                           f"into another --out folder.")
        # Braces quote the path for OpenOCD's Tcl, spaces included.
        return FlashPlan([[self.program, "-f", config, "-c", f"program {{{request.image}}} verify reset exit"]],
                         verifies="the flash against the image, by OpenOCD's verify_image (program ... verify)")


register(OpenocdFlasher())
