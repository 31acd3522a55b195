"""The tvm backend for microcontrollers (targets with os "none"): TVM kernels and a static C
driver (static_driver.py), and harness firmware for the board and for its emulator.

The bundle:
    firmware.elf, firmware.bin  harness firmware linked for the board's memory map (`invoke flash`)
    firmware-qemu.elf           the same firmware linked for the emulator's (what qemu-system runs)
    src/                        the model as C for your own firmware: <name>.h (the API), <name>.c
                                (driver), <name>_kernels.c or .o, <name>_weights.S and .bin, the
                                harness, and the TVM headers they include
    manifest.json               with "memory" (flash and RAM from the board image) and "firmware"

This module registers nothing: tvm/__init__.py dispatches here. tvm is imported inside functions.
"""

import tempfile
from fractions import Fraction
from pathlib import Path

from ... import bundle
from ...elf import ElfImage
from ...errors import BuildError
from ...hostenv import cross
from ...model.info import ModelInfo
from ...paths import FIRMWARE_DIR
from ...target.profile import Target
from ..base import CompileRequest, CompileResult, memory_section
from .static_driver import CFLAGS, StaticModel, compile_model_objects, generate_sources

LINKER_SCRIPTS_DIR = FIRMWARE_DIR / "ld"
FIRMWARE_SOURCES = ("startup.c", "semihosting.c", "cycles.c")
BOARD_IMAGE = "firmware.elf"
BOARD_BINARY = "firmware.bin"
EMULATOR_IMAGE = "firmware-qemu.elf"
LARGEST_SHOWN = 8  # consumers listed in the manifest; the error names the first few
NAMED_IN_ERROR = 4


def compile_for_microcontroller(request: CompileRequest) -> CompileResult:
    # Absolute: the compiler and the linker run in a temporary folder.
    model, target, bundle_dir = request.model, request.target, request.bundle_dir.absolute()
    # Find the tools before the slow steps, so a missing one fails at once.
    tools = {tool: cross.find_tool(target, tool) for tool in ("gcc", "objcopy")}
    static_model = generate_sources(request, "firmware_harness.c.j2")

    with tempfile.TemporaryDirectory(prefix="edgeyard-firmware-") as work:
        objects = _compile_objects(Path(work), static_model, target, tools["gcc"])
        request.progress(f"linking the harness firmware for {target.name}")
        board_image = bundle_dir / BOARD_IMAGE
        _link_board_image(objects, target, tools["gcc"], board_image, Path(work))
        memory = _memory(board_image, target, static_model.context)
        _check_fits(memory, model, target)
        cross.run_tool([tools["objcopy"], "-O", "binary", BOARD_IMAGE, BOARD_BINARY], cwd=bundle_dir)
        images = {"board": BOARD_IMAGE, "board_binary": BOARD_BINARY}
        if target.emulator:
            emulator_objects = [*objects["common"], objects["harness_emulator"]]
            _link(emulator_objects, target, target.emulator["linker_script"], tools["gcc"],
                  bundle_dir / EMULATOR_IMAGE, Path(work))
            images["emulator"] = EMULATOR_IMAGE

    entry_image = images.get("emulator", BOARD_IMAGE)
    entry = bundle.Entry(kind="firmware", argv=[f"./{entry_image}"], arch=target.arch)
    firmware = {"images": images, "kernels": static_model.route, "model_identifier": static_model.name}
    manifest = bundle.write_manifest(bundle_dir, "tvm", target.name, entry, model.inputs, model.outputs,
                                     extra={"tvm_target": target.tvm_target, "memory": memory, "firmware": firmware})
    return CompileResult(manifest, [memory_section(memory)])


# ---------- compiling and linking ----------


def _tick_nanoseconds(target: Target, emulated: bool) -> Fraction:
    """Nanoseconds per SysTick tick at the board's clock: on the board a tick is a cycle; under
    qemu -icount shift=0 it is 1e9 / systick_hz instructions, each counted as one cycle (an estimate)."""
    per_cycle = Fraction(1000, target.clock_mhz)
    return per_cycle * Fraction(10**9, target.emulator["systick_hz"]) if emulated else per_cycle


def _compile_objects(work: Path, static_model: StaticModel, target: Target, gcc: Path) -> dict:
    """Object files: "common" (firmware support, driver, kernels, weights) and one harness per image."""
    cpu_flags = target.firmware["cflags"]
    flags = [*cpu_flags, *CFLAGS, f"-I{FIRMWARE_DIR}", f"-I{static_model.src}", f"-I{static_model.src / 'include'}"]

    def compile_c(source: Path, obj: str, extra: tuple[str, ...] = ()) -> Path:
        cross.run_tool([gcc, *flags, *extra, "-c", source, "-o", obj], cwd=work)
        return work / obj

    common = [compile_c(FIRMWARE_DIR / source, source.replace(".c", ".o")) for source in FIRMWARE_SOURCES]
    common += compile_model_objects(static_model, work, gcc, cpu_flags)
    objects = {"common": common}
    for image, emulated in (("board", False), ("emulator", True)):
        if emulated and not target.emulator:
            continue
        tick = _tick_nanoseconds(target, emulated)
        objects[f"harness_{image}"] = compile_c(static_model.src / "harness.c", f"harness_{image}.o",
                                                (f"-DTICK_NS_NUM={tick.numerator}ULL",
                                                 f"-DTICK_NS_DEN={tick.denominator}ULL"))
    return objects


def _link(objects: list[Path], target: Target, linker_script: str, gcc: Path, out: Path, work: Path,
          extra: tuple[str, ...] = ()) -> None:
    cross.run_tool([
        gcc, *target.firmware["cflags"], "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
        f"-L{LINKER_SCRIPTS_DIR}", "-T", linker_script,
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


# ---------- memory ----------

def _elf_layout(path: Path) -> tuple[list[dict], list[dict]]:
    """Sections {"name", "bytes", "flash", "ram"} and sized symbols {"symbol", "bytes", "section"} of
    the image. Flash holds what is loaded; RAM what is writable."""
    image = ElfImage(path)
    sections = [{"name": s.name, "bytes": s.size, "flash": s.loaded, "ram": s.writable} for s in image.sections]
    symbols = [{"symbol": symbol.name, "bytes": symbol.size, "section": sections[symbol.section]["name"]}
               for symbol in image.symbols()
               if symbol.size and 0 < symbol.section < len(sections)
               and (sections[symbol.section]["flash"] or sections[symbol.section]["ram"])]
    return sections, symbols


def _memory(image: Path, target: Target, context: dict) -> dict:
    """report.json's memory section, measured on the board image."""
    sections, symbols = _elf_layout(image)
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
        "arena_bytes": context["arena_bytes"],
        "stack_bytes": stack,
        "io_bytes": context["input_bytes"] + context["output_bytes"],
        "sections": {s["name"]: s["bytes"] for s in sections if s["flash"] or s["ram"]},
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
