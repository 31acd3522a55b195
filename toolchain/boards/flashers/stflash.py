"""st-flash (stlink-tools, ST-Link probes): writes the raw image at the flash base address, then resets."""

from . import FlasherCaps, FlashPlan, FlashRequest, flash_setting, register


class StflashFlasher:
    name = "st-flash"
    program = "st-flash"
    install_hint = "install it with: apt-get install stlink-tools."
    caps = FlasherCaps(reads_back=True)  # st-flash write reads every written page back (no option needed)

    def plan(self, request: FlashRequest) -> FlashPlan:
        address = flash_setting(request.target, "address", self.name)
        return FlashPlan([[self.program, "--reset", "write", str(request.binary), f"0x{address:08x}"]],
                         verifies="the flash against the image, read back by st-flash write")


register(StflashFlasher())
