"""Machine set-up steps that bootstrap.sh runs; each is idempotent and says what is already present.

    python -m toolchain.hostenv tvm-runtime aarch64          TVM runtime libraries for a board's architecture
    python -m toolchain.hostenv executorch-runtime aarch64   ExecuTorch's C++ runtime (libraries, headers) for one
    python -m toolchain.hostenv userland aarch64             the emulated board userland (python3.11 + wheels)
    python -m toolchain.hostenv qemu-plugin                  the qemu plugin that counts instructions
"""

import argparse
import platform
import sys

from ..errors import EdgeyardError


def main(argv: list[str] | None = None) -> int:
    from . import executorch_runtime, qemu_plugin, tvm_runtimes, userland, wheels

    parser = argparse.ArgumentParser(prog="python -m toolchain.hostenv", description=__doc__.splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    runtime_arches = sorted({*wheels.PLATFORMS, platform.machine()})  # fetched from wheels, or this machine's own
    steps.add_parser("tvm-runtime", help="fetch the TVM runtime libraries for an architecture").add_argument(
        "arch", choices=runtime_arches)
    steps.add_parser("executorch-runtime", help="fetch ExecuTorch's C++ runtime for an architecture").add_argument(
        "arch", choices=runtime_arches)
    steps.add_parser("userland", help="build the emulated board userland for an architecture").add_argument(
        "arch", choices=sorted(userland.ARCHES))
    steps.add_parser("qemu-plugin", help="build the instruction-counting plugin for the installed qemu")
    args = parser.parse_args(argv)

    def say(message: str) -> None:
        print(f"{args.step}: {message}", flush=True)

    steps_by_name = {
        "tvm-runtime": lambda: tvm_runtimes.fetch(args.arch, progress=say),
        "executorch-runtime": lambda: executorch_runtime.fetch(args.arch, progress=say),
        "userland": lambda: userland.build(args.arch, progress=say),
        "qemu-plugin": lambda: qemu_plugin.build(progress=say),
    }
    try:
        steps_by_name[args.step]()
    except EdgeyardError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
