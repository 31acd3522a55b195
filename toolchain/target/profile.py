"""Target profiles: one TOML file per board in targets/, checked against a schema on load."""

import copy
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BadInput
from ..paths import TARGETS_DIR

# tvm_runtime values: "shared", the Relax VM in libtvm_runtime.so and libtvm_ffi.so built for the
# board, which the bundle carries (the default on Linux); "none", TVM's kernels behind a static C
# driver, no TVM runtime at all (the only choice without an OS; a Linux board gets one executable).
TVM_RUNTIMES = ("shared", "none")
# default_backend "auto": the target's backends in order, the first that builds and validates the model.
AUTO_BACKEND = "auto"
TVM_KINDS = ("llvm", "cuda")  # what the tvm backend compiles for: a CPU through LLVM, an NVIDIA GPU

# key -> (python type, required). Nested tables have their own schema.
_SCHEMA: dict = {
    "name": (str, True),
    "description": (str, True),
    "os": (str, True),
    "arch": (str, True),
    "cpu": (str, True),
    "clock_mhz": (int, True),
    "cross_prefix": (str, True),
    "backends": (list, True),
    "default_backend": (str, True),
    "runners": (list, True),
    "tvm_target": (dict, True),
    # What the tvm backend's bundle runs on (TVM_RUNTIMES); bare-metal boards can only have "none".
    "tvm_runtime": (str, False),
    # Backends this board cannot use, each with the reason given to a user who asks for it.
    "unavailable_backends": (dict, False),
    "emulator": ({
        "command": (list, True),
        # Bare-metal boards (os "none"): the emulator's memory map in firmware/ld/, its SysTick
        # clock (ticks -> instructions under -icount shift=0), and how long one run may take.
        "linker_script": (str, False),
        "systick_hz": (int, False),
        "timeout_s": (int, False),
        # Linux boards: the board's /proc/cpuinfo inside the emulated userland (LiteRT and ONNX
        # Runtime pick their kernels from it; see templates/cpuinfo.j2).
        "cpuinfo": ({
            "cores": (int, True),
            "implementer": (str, True),
            "variant": (str, True),
            "part": (str, True),
            "revision": (int, True),
            "features": (str, True),
            "model": (str, True),
        }, False),
    }, False),
    "memory": ({"ram_bytes": (int, True), "storage_bytes": (int, True), "flash_bytes": (int, False)}, True),
    # Bare-metal boards: how firmware is compiled and linked for the real board.
    "firmware": ({
        "cflags": (list, True),  # CPU and FPU flags for arm-none-eabi-gcc
        "linker_script": (str, True),  # the board's memory map in firmware/ld/
        "stack_bytes": (int, True),  # stack budget reserved at the bottom of RAM
    }, False),
    # Boards with a debug probe: what `invoke flash` passes to each tool.
    "flash": ({
        "default_probe": (str, True),
        "pyocd_target": (str, False),  # pyocd --target name (from the device's CMSIS pack)
        "openocd_config": (str, False),  # openocd -f script (board or target config)
        "address": (int, False),  # where a raw .bin goes (st-flash write)
    }, False),
    # Boards booted by MCUboot: the partition layout the bootloader was built with and the image's
    # version (docs/trust.md#mcuboot-images). Needs [flash].address, where the flash starts.
    "mcuboot": ({
        "slot_offset": (int, True),  # the primary slot, from the start of the flash (the bootloader before it)
        "slot_size": (int, True),  # bytes of each image slot
        "header_size": (int, True),  # MCUboot's header before the image (the vector table follows it)
        "align": (int, True),  # the flash's write alignment (imgtool --align: 1, 2, 4, 8, 16 or 32)
        "version": (str, True),  # MAJOR.MINOR.REVISION[+BUILD]
        "security_counter": (int, True),  # MCUboot refuses images with a lower counter (rollback protection)
    }, False),
    # Boards with an Arm Ethos-U NPU: what Vela compiles for, every setting named (no vela.ini defaults).
    "ethos_u": ({
        "accelerator_config": (str, True),  # vela --accelerator-config, e.g. ethos-u55-128 (MACs per cycle)
        "config_file": (str, True),  # vela --config, e.g. Arm/vela.ini (shipped with Vela)
        "system_config": (str, True),  # vela --system-config: clocks and memory ports
        "memory_mode": (str, True),  # vela --memory-mode: where weights and tensors live
    }, False),
    # FPGA boards and cards: the part hls4ml's HLS project is written for, and its fixed-point types.
    "fpga": ({
        "part": (str, True),  # AMD/Xilinx part number
        "clock_mhz": (int, True),  # the design's target clock
        "precision": (str, True),  # default fixed-point type, e.g. ap_fixed<18,8>
        "layer_precision": (dict, False),  # layer name -> fixed-point type, overriding precision
        "reuse_factor": (int, False),  # multiplications sharing one multiplier (hls4ml ReuseFactor; 1 by default)
    }, False),
}


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    os: str
    arch: str
    cpu: str
    clock_mhz: int
    cross_prefix: str
    backends: tuple[str, ...]
    default_backend: str
    runners: tuple[str, ...]
    tvm_target: dict
    memory: dict
    path: Path
    tvm_runtime: str = "shared"
    emulator: dict | None = None
    firmware: dict | None = None
    flash: dict | None = None
    unavailable_backends: dict | None = None
    ethos_u: dict | None = None
    mcuboot: dict | None = None
    fpga: dict | None = None
    sha256: str = field(default="", compare=False)


def _check(data: dict, schema: dict, path: Path, prefix: str = "") -> None:
    for key in data:
        if key not in schema:
            raise BadInput(f"{path}: unknown key '{prefix}{key}' (allowed: {', '.join(sorted(schema))}).")
    for key, (kind, required) in schema.items():
        if key not in data:
            if required:
                raise BadInput(f"{path}: missing required key '{prefix}{key}'.")
            continue
        value = data[key]
        if isinstance(kind, dict):
            if not isinstance(value, dict):
                raise BadInput(f"{path}: '{prefix}{key}' must be a table.")
            _check(value, kind, path, f"{prefix}{key}.")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise BadInput(f"{path}: '{prefix}{key}' must be of type {kind.__name__}, not {type(value).__name__}.")
        elif kind is int and value < 0:  # sizes, clocks, addresses, counts
            raise BadInput(f"{path}: '{prefix}{key}' must not be negative, not {value}.")
        elif kind is list and not all(isinstance(item, str) for item in value):
            raise BadInput(f"{path}: '{prefix}{key}' must be a list of strings, not {value}.")


def _check_bare_metal(data: dict, path: Path) -> None:
    """What a bare-metal target (os "none") must say on top of the schema."""
    if "firmware" not in data:
        raise BadInput(f"{path}: a bare-metal target (os \"none\") needs a [firmware] table.")
    if "flash_bytes" not in data["memory"]:
        raise BadInput(f"{path}: a bare-metal target (os \"none\") needs 'memory.flash_bytes'.")
    for key in ("linker_script", "systick_hz", "timeout_s"):
        if "emulator" in data and key not in data["emulator"]:
            raise BadInput(f"{path}: a bare-metal target's emulator needs 'emulator.{key}'.")


def _check_mcuboot(data: dict, path: Path) -> None:
    mcuboot = data["mcuboot"]
    if data["os"] != "none" or "address" not in data.get("flash", {}):
        raise BadInput(f"{path}: [mcuboot] is for bare-metal targets with 'flash.address' (where the flash starts).")
    if not re.fullmatch(r"\d+(\.\d+){0,2}(\+\d+)?", mcuboot["version"]):
        raise BadInput(f"{path}: mcuboot.version is '{mcuboot['version']}', not MAJOR.MINOR.REVISION[+BUILD].")
    if mcuboot["align"] not in (1, 2, 4, 8, 16, 32):
        raise BadInput(f"{path}: mcuboot.align is {mcuboot['align']}; use 1, 2, 4, 8, 16 or 32.")
    if mcuboot["header_size"] < 32 or mcuboot["header_size"] >= mcuboot["slot_size"]:
        raise BadInput(f"{path}: mcuboot.header_size is {mcuboot['header_size']}; it must hold MCUboot's 32-byte "
                       "header and be smaller than mcuboot.slot_size.")
    if mcuboot["slot_offset"] + mcuboot["slot_size"] > data["memory"]["flash_bytes"]:
        raise BadInput(f"{path}: the MCUboot primary slot (mcuboot.slot_offset + slot_size) ends past the flash "
                       f"(memory.flash_bytes = {data['memory']['flash_bytes']}).")


def _check_tvm_runtime(data: dict, path: Path) -> None:
    runtime = data["tvm_runtime"]
    if runtime not in TVM_RUNTIMES:
        raise BadInput(f"{path}: tvm_runtime is '{runtime}'; use {' or '.join(repr(r) for r in TVM_RUNTIMES)}.")
    if data["os"] == "none" and runtime != "none":
        raise BadInput(f"{path}: a bare-metal target (os \"none\") has no TVM runtime; tvm_runtime must be 'none'.")


def validate(data: dict, path: Path) -> dict:
    """`data` (a profile's tables) checked against the schema and the rules between keys; returns it with
    tvm_runtime's default filled in. Every problem is one BadInput naming `path`."""
    _check(data, _SCHEMA, path)
    if data["tvm_target"].get("kind") not in TVM_KINDS:
        raise BadInput(f"{path}: tvm_target.kind is {data['tvm_target'].get('kind')!r}; "
                       f"use {' or '.join(repr(k) for k in TVM_KINDS)}.")
    if data["default_backend"] not in [*data["backends"], AUTO_BACKEND]:
        raise BadInput(f"{path}: default_backend '{data['default_backend']}' is not in backends {data['backends']} "
                       f"(or '{AUTO_BACKEND}').")
    if data["os"] == "none":
        _check_bare_metal(data, path)
    if "mcuboot" in data:
        _check_mcuboot(data, path)
    data.setdefault("tvm_runtime", "none" if data["os"] == "none" else "shared")
    _check_tvm_runtime(data, path)
    return data


def profile_data(target: Target) -> dict:
    """The target as the tables of its profile (what validate() checks), a deep copy."""
    data = {key: copy.deepcopy(target.__dict__[key]) for key in _SCHEMA if target.__dict__[key] is not None}
    return {**data, "backends": list(target.backends), "runners": list(target.runners)}


def from_data(data: dict, path: Path, sha256: str) -> Target:
    return Target(**{**data, "backends": tuple(data["backends"]), "runners": tuple(data["runners"])},
                  path=path, sha256=sha256)


def load_target_file(path: Path) -> Target:
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise BadInput(f"{path}: not valid TOML ({err}).") from None
    _check(data, _SCHEMA, path)
    if data["name"] != path.stem:
        raise BadInput(f"{path}: 'name' is '{data['name']}' but the file is named '{path.stem}.toml'.")
    return from_data(validate(data, path), path, hashlib.sha256(raw).hexdigest())


def target_names(targets_dir: Path = TARGETS_DIR) -> list[str]:
    return sorted(p.stem for p in targets_dir.glob("*.toml"))


def load_target(name: str, targets_dir: Path = TARGETS_DIR) -> Target:
    path = targets_dir / f"{name}.toml"
    if name not in target_names(targets_dir) or not path.is_file():  # a name, not a path out of targets/
        raise BadInput(f"unknown target '{name}'; known targets: {', '.join(target_names(targets_dir))}.")
    return load_target_file(path)


def all_targets(targets_dir: Path = TARGETS_DIR) -> list[Target]:
    return [load_target(n, targets_dir) for n in target_names(targets_dir)]


def loadable_targets(targets_dir: Path = TARGETS_DIR) -> list[Target]:
    """The profiles that load: for facts gathered over every board (a backend's tool versions), where one
    broken profile must not stop the builds of the others (it is refused when it is the one asked for)."""
    targets = []
    for name in target_names(targets_dir):
        try:
            targets.append(load_target(name, targets_dir))
        except BadInput:
            continue
    return targets


def target_table(targets_dir: Path = TARGETS_DIR) -> str:
    from ..console import table

    rows = [[t.name, t.arch, t.cpu, f"{t.clock_mhz} MHz" if t.clock_mhz else "-", ", ".join(t.backends),
             t.default_backend, ", ".join(t.runners), t.description] for t in all_targets(targets_dir)]
    return table(["target", "arch", "cpu", "clock", "backends", "default", "runners", "description"], rows)
