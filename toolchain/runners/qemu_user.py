"""The qemu-user runner: a Linux board's native binaries run on this machine under qemu-user.

Python bundles (LiteRT, ONNX Runtime) need the board's python3 and wheels inside an emulated
userland; until that exists they are reported as not run on target, never run on the host instead.
"""

import shutil

from ..bundle import Entry
from ..errors import MissingTool
from ..targets import Target
from . import register


class QemuUserRunner:
    name = "qemu-user"
    emulated = True

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        if not target.emulator:
            return f"target {target.name} names no emulator"
        if entry.kind != "native":
            return "a Python bundle needs the board's userland (python3 and wheels), not available under emulation yet"
        if entry.arch != target.arch:
            return f"the bundle is for {entry.arch}, the target is {target.arch}"
        return None

    def command(self, target: Target, entry: Entry, threads: int) -> tuple[list[str], dict[str, str]]:
        emulator = list(target.emulator["command"])
        if shutil.which(emulator[0]) is None:
            raise MissingTool(emulator[0], "install it with: apt-get install qemu-user, or run ./bootstrap.sh")
        env = {**entry.env, "EDGEYARD_THREADS": str(threads), "TVM_NUM_THREADS": str(threads)}
        # -E sets the guest's environment without touching the emulator process's own.
        guest_env = [arg for key, value in env.items() for arg in ("-E", f"{key}={value}")]
        return emulator + guest_env + list(entry.argv), {}


register(QemuUserRunner())
