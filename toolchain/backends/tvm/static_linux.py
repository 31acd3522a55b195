"""The tvm backend for Linux boards with no TVM runtime (tvm_runtime = "none", e.g. rpi2): TVM's
kernels and the static C driver (static_driver.py) linked with a stdio harness into one executable.

The bundle:
    runner         templates/linux_harness.c.j2 + driver + kernels + weights: one executable that
                   needs only the C library (libc, libm) on the board
    src/           the model as C for your own program: <name>.h (the API), <name>.c (driver),
                   <name>_kernels.c or .o, <name>_weights.S and .bin, the harness, the TVM headers
    run.sh, manifest.json  with "static_driver": the kernels' route and the static memory's sizes

TVM's LLVM objects are position-independent (GOT-indirect data, PC-relative calls), so they link
into gcc's default PIE executable as they are: no relocation-model option, no text relocations.
This module registers nothing: tvm/__init__.py dispatches here. tvm is imported inside functions.
"""

import tempfile
from pathlib import Path

from ... import bundle
from ...hostenv import cross
from ..base import CompileRequest, CompileResult, ReportSection
from .static_driver import compile_model_objects, generate_sources

RUNNER = "runner"


def compile_linux_executable(request: CompileRequest) -> CompileResult:
    # Absolute: the compiler and the linker run in a temporary folder.
    model, target, bundle_dir = request.model, request.target, request.bundle_dir.absolute()
    gcc = cross.find_tool(target, "gcc")  # before the slow steps, so a missing compiler fails at once
    static_model = generate_sources(request, "linux_harness.c.j2")
    # The profile's core sets gcc's instruction set and FPU (cortex-a7: armv7ve with NEON-VFPv4).
    cpu_flags = [f"-mcpu={target.cpu}"]
    src = static_model.src
    with tempfile.TemporaryDirectory(prefix="edgeyard-static-") as work:
        objects = compile_model_objects(static_model, Path(work), gcc, cpu_flags)
        cross.run_tool([gcc, *cpu_flags, *cross.c_flags(src, Path(work)), f"-I{src}", f"-I{src / 'include'}", "-c", src / "harness.c",
                        "-o", "harness.o"], cwd=Path(work))
        request.progress(f"linking the {RUNNER} with {gcc.name}")
        cross.run_tool([gcc, *cpu_flags, "-Wl,--gc-sections", "-o", bundle_dir / RUNNER, *objects, "harness.o", "-lm"],
                       cwd=Path(work))

    entry = bundle.Entry(kind="native", argv=[f"./{RUNNER}"], arch=target.arch)
    bundle.write_run_script(bundle_dir, "tvm", target.name, entry)
    context = static_model.context
    static_driver = {
        "kernels": static_model.route,
        "model_identifier": static_model.name,
        **{key: context[key] for key in ("weights_bytes", "activations_bytes", "arena_bytes")},
    }
    manifest = bundle.write_manifest(bundle_dir, "tvm", target.name, entry, model.inputs, model.outputs,
                                     extra={"tvm_target": target.tvm_target, "static_driver": static_driver})
    return CompileResult(manifest, [ReportSection("static_driver", static_driver)])
