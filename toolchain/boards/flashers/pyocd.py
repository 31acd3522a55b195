"""pyOCD (CMSIS-DAP, ST-Link, J-Link probes): loads the ELF image; the device comes from its CMSIS pack."""

from . import FlasherCaps, FlashPlan, FlashRequest, flash_setting, register


class PyocdFlasher:
    name = "pyocd"
    program = "pyocd"
    install_hint = "install it with: pip install pyocd, then the device's pack: pyocd pack install <pyocd_target>."
    caps = FlasherCaps(reads_back=False)  # only the pyOCD releases that verify by default do

    def plan(self, request: FlashRequest) -> FlashPlan:
        device = flash_setting(request.target, "pyocd_target", self.name)
        return FlashPlan([[self.program, "load", "--target", device, str(request.image)]],
                         verifies="what pyocd load checks itself (recent pyOCD releases read the flash back by "
                                  "default); for a sha256 read-back use pyocd gdbserver with --probe gdb")


register(PyocdFlasher())
