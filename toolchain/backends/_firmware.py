"""Harness firmware for microcontrollers (targets with os "none"), shared by the backends that
generate a model as static C (tvm's static driver, the kernels backend): the model's sources plus
firmware/ and the harness, compiled with the board's flags and linked for the board and for its
emulator; flash and RAM measured on the board image.

The bundle:
    firmware.elf, firmware.bin  harness firmware linked for the board's memory map (`invoke flash`)
    firmware-qemu.elf           the same firmware linked for the emulator's (what qemu-system runs)
    firmware-mcuboot.bin        boards with [mcuboot], signed builds: the firmware linked for MCUboot's
                                primary slot and signed with imgtool (_mcuboot.py)
    src/                        the model as C for your own firmware: <name>.h (the API), its driver,
                                kernels and weights, and the harness
    manifest.json               with "memory" (flash and RAM from the board image) and "firmware"

A private module: it registers nothing.
"""

import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

from .. import bundle, elf
from . import _mcuboot
from ..errors import BuildError
from ..hostenv import cross
from ..hostenv.tools import Tool
from ..model.info import ModelInfo
from ..paths import FIRMWARE_DIR
from ..target.profile import Target
from .base import CompileRequest, CompileResult, ReportSection, memory_section

LINKER_SCRIPTS_DIR = FIRMWARE_DIR / "ld"
FIRMWARE_SOURCES = ("startup.c", "semihosting.c", "cycles.c", "markers.c")
BOARD_IMAGE = "firmware.elf"
BOARD_BINARY = "firmware.bin"
EMULATOR_IMAGE = "firmware-qemu.elf"
LARGEST_SHOWN = 8  # consumers listed in the manifest; the error names the first few
NAMED_IN_ERROR = 4


@dataclass
class ModelSources:
    """A model generated as static C in the bundle's src/, with harness.c beside it."""

    name: str  # the model's C identifier: <name>.h, <name>_run()
    src: Path  # absolute
    # What its header was rendered with: weights_bytes, activations_bytes, input/output_bytes, and
    # working_bytes: all the RAM the model writes besides its inputs and outputs (activations, scratch).
    context: dict
    # (work folder, gcc, the board's cpu flags) -> the model's object files, compiled in `work`
    compile_objects: Callable[[Path, Path, list[str]], list[Path]]
    firmware: dict = field(default_factory=dict)  # what the manifest's "firmware" says of the model
    manifest: dict = field(default_factory=dict)  # the backend's own manifest keys (tvm: tvm_target)


_FIRMWARE_TOOLS = {"gcc": "compiles and links the firmware", "objcopy": "writes the firmware's raw image"}


def find_tools(target: Target) -> dict[str, Path]:
    """The cross tools firmware needs, found before the slow steps so a missing one fails at once."""
    return {tool: cross.find_tool(target, tool) for tool in _FIRMWARE_TOOLS}


def firmware_tools(target: Target) -> list[Tool]:
    """find_tools' tools as Tools (invoke doctor)."""
    return [cross.tool(target.cross_prefix, tool, purpose) for tool, purpose in _FIRMWARE_TOOLS.items()]


def build_firmware(request: CompileRequest, backend: str, sources: ModelSources, tools: dict[str, Path],
                   sections: tuple[ReportSection, ...] = ()) -> CompileResult:
    """Compile and link the harness firmware around `sources`; write the manifest."""
    model, target, bundle_dir = request.model, request.target, request.bundle_dir.absolute()
    mcuboot = None
    with tempfile.TemporaryDirectory(prefix="edgeyard-firmware-") as work:
        objects = _compile_objects(Path(work), sources, target, tools["gcc"])
        request.progress(f"linking the harness firmware for {target.name}")
        board_image = bundle_dir / BOARD_IMAGE
        _link_board_image(objects, target, tools["gcc"], board_image, Path(work))
        memory = _memory(board_image, target, sources.context)
        _check_fits(memory, model, target)
        cross.run_tool([tools["objcopy"], "-O", "binary", BOARD_IMAGE, BOARD_BINARY], cwd=bundle_dir)
        images = {"board": BOARD_IMAGE, "board_binary": BOARD_BINARY}
        if target.emulator:
            emulator_objects = [*objects["common"], objects["harness_emulator"]]
            _link(emulator_objects, target, target.emulator["linker_script"], tools["gcc"],
                  bundle_dir / EMULATOR_IMAGE, Path(work))
            images["emulator"] = EMULATOR_IMAGE
        if target.mcuboot and request.signing_key is not None:
            request.progress(f"signing an MCUboot image for {target.name} with {request.signing_key}")
            mcuboot = _mcuboot_image(objects, target, tools, request.signing_key, bundle_dir, Path(work))
            images["mcuboot"] = _mcuboot.MCUBOOT_IMAGE

    entry_image = images.get("emulator", BOARD_IMAGE)
    entry = bundle.Entry(kind="firmware", argv=[f"./{entry_image}"], arch=target.arch)
    firmware = {"images": images, "model_identifier": sources.name, **sources.firmware}
    if mcuboot is not None:
        firmware["mcuboot"] = mcuboot
    extra = {"memory": memory, "firmware": firmware, **sources.manifest}
    manifest = bundle.write_manifest(bundle_dir, backend, target.name, entry, model.inputs, model.outputs,
                                     extra=extra)
    return CompileResult(manifest, [memory_section(memory), *sections])


# ---------- compiling and linking ----------


def _tick_counts(target: Target, emulated: bool) -> Fraction:
    """What a SysTick tick counts: on the board a cycle; under qemu -icount shift=0, 1e9 / systick_hz
    instructions."""
    return Fraction(10**9, target.emulator["systick_hz"]) if emulated else Fraction(1)


def _compile_objects(work: Path, sources: ModelSources, target: Target, gcc: Path) -> dict:
    """Object files: "common" (firmware support and the model) and one harness per image."""
    cpu_flags = target.firmware["cflags"]
    flags = [*cpu_flags, *cross.c_flags(sources.src, work), f"-I{FIRMWARE_DIR}", f"-I{sources.src}", f"-I{sources.src / 'include'}"]

    def compile_c(source: Path, obj: str, extra: tuple[str, ...] = ()) -> Path:
        cross.run_tool([gcc, *flags, *extra, "-c", source, "-o", obj], cwd=work)
        return work / obj

    common = [compile_c(FIRMWARE_DIR / source, source.replace(".c", ".o")) for source in FIRMWARE_SOURCES]
    common += sources.compile_objects(work, gcc, cpu_flags)
    objects = {"common": common}
    for image, emulated in (("board", False), ("emulator", True)):
        if emulated and not target.emulator:
            continue
        # Nanoseconds per tick at the board's clock: under the emulator an estimate, one instruction per cycle.
        counts = _tick_counts(target, emulated)
        tick_ns = counts * Fraction(1000, target.clock_mhz)
        objects[f"harness_{image}"] = compile_c(sources.src / "harness.c", f"harness_{image}.o", (
            f"-DTICK_NS_NUM={tick_ns.numerator}ULL", f"-DTICK_NS_DEN={tick_ns.denominator}ULL",
            f"-DTICK_COUNT_NUM={counts.numerator}ULL", f"-DTICK_COUNT_DEN={counts.denominator}ULL"))
    return objects


def _link(objects: list[Path], target: Target, linker_script: str, gcc: Path, out: Path, work: Path,
          extra: tuple[str, ...] = (), image_offset: int = 0) -> None:
    """Link `objects`; a board's memory map places the image `image_offset` bytes into the flash (MCUboot)."""
    cross.run_tool([
        gcc, *target.firmware["cflags"], "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
        f"-L{LINKER_SCRIPTS_DIR}", "-T", linker_script, f"-Wl,--defsym=__image_offset={image_offset}",
        f"-Wl,--defsym=__stack_size={target.firmware['stack_bytes']}", *extra,
        "-o", out, *objects, "-lm", "-lc", "-lgcc",
    ], cwd=work)  # fmt: skip


def _link_board_image(objects: dict, target: Target, gcc: Path, out: Path, work: Path) -> None:
    """Link for the board's memory map. When the image overflows it, link it anyway (for measuring:
    the caller then names what does not fit) instead of failing on the linker's terse message."""
    board_objects = [*objects["common"], objects["harness_board"]]
    try:
        _link(board_objects, target, target.firmware["linker_script"], gcc, out, work)
    except BuildError as err:
        if "overflowed" not in str(err) and "will not fit in region" not in str(err):
            raise
        _link(board_objects, target, target.firmware["linker_script"], gcc, out, work, ("-Wl,--noinhibit-exec",))


def _mcuboot_image(objects: dict, target: Target, tools: dict[str, Path], key: Path, bundle_dir: Path,
                   work: Path) -> dict:
    """The board firmware linked for MCUboot's primary slot, signed into the bundle; what the manifest says."""
    image, binary = work / "mcuboot.elf", work / "mcuboot.bin"
    _link([*objects["common"], objects["harness_board"]], target, target.firmware["linker_script"], tools["gcc"],
          image, work, image_offset=_mcuboot.image_offset(target))
    cross.run_tool([tools["objcopy"], "-O", "binary", image, binary], cwd=work)
    return _mcuboot.sign(image, binary, target, key, bundle_dir / _mcuboot.MCUBOOT_IMAGE)


# ---------- memory ----------

def _memory(image: Path, target: Target, context: dict) -> dict:
    """report.json's memory section, measured on the board image."""
    sections, symbols = elf.layout(image)
    in_region = {section["name"]: section for section in sections}
    stack = target.firmware["stack_bytes"]
    symbols.append({"symbol": "stack budget", "bytes": stack, "section": ".stack"})
    memory = {
        "flash_bytes": sum(s["bytes"] for s in sections if s["flash"]),
        "ram_bytes": sum(s["bytes"] for s in sections if s["ram"]),
        "flash_capacity_bytes": target.memory["flash_bytes"],
        "ram_capacity_bytes": target.memory["ram_bytes"],
        "weights_bytes": context["weights_bytes"],
        "activations_bytes": context["activations_bytes"],
        "arena_bytes": context["working_bytes"],  # the model's working memory, as TFLite Micro's arena is
        "stack_bytes": stack,
        "io_bytes": context["input_bytes"] + context["output_bytes"],
        "sections": {s["name"]: s["bytes"] for s in sections if s["flash"] or s["ram"]},
        # Which sections fill which region (.data is in both: loaded from flash, copied to RAM): report.html's bars.
        "flash_sections": {s["name"]: s["bytes"] for s in sections if s["flash"]},
        "ram_sections": {s["name"]: s["bytes"] for s in sections if s["ram"]},
    }
    for region in ("flash", "ram"):
        consumers = [s for s in symbols if in_region[s["section"]][region]]
        memory[f"largest_{region}"] = sorted(consumers, key=lambda s: -s["bytes"])[:LARGEST_SHOWN]
    return memory


def _check_fits(memory: dict, model: ModelInfo, target: Target) -> None:
    over = [(region, memory[f"{region}_bytes"], memory[f"{region}_capacity_bytes"]) for region in ("flash", "ram")
            if memory[f"{region}_bytes"] > memory[f"{region}_capacity_bytes"]]
    if not over:
        return
    needs = " and ".join(f"{used:,} bytes of {region.replace('ram', 'RAM')} ({capacity:,} available)"
                         for region, used, capacity in over)
    biggest = ", ".join(f"{c['symbol']} ({c['bytes']:,} bytes, {c['section']})"
                        for region, _, _ in over for c in memory[f"largest_{region}"][:NAMED_IN_ERROR])
    raise BuildError(f"{model.path.name} does not fit {target.name}: the firmware needs {needs}; "
                     f"the biggest consumers are {biggest}.")
