"""The executorch backend: a torch.export program lowered to an ExecuTorch .pte with the XNNPACK partitioner (the ops
XNNPACK takes run in its delegate, the rest in ExecuTorch's optimized and portable kernels), run by a C++ runner.

The bundle (toolchain/bundle.py protocol), the same on this machine and on an ARM board:
    runner      firmware/executorch_runner.cpp, compiled for the target against ExecuTorch's C++ runtime
                (toolchain/hostenv/executorch_runtime.py), rpath $ORIGIN/lib
    model.pte   the lowered program
    lib/        libexecutorch.so, its thread pool, the XNNPACK delegate and the kernels, for the target's architecture
    run.sh, manifest.json
No Python and no libtorch on the board: only ExecuTorch's Python bindings need libtorch, and the bundle uses none.
The runner does not depend on the model (the program describes its own tensors), so it is compiled once per
architecture, compiler and executorch version and kept in the cache.
"""

import copy
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import bundle
from ..errors import BuildError, MissingTool, reason
from ..hostenv import cross, executorch_runtime
from ..hostenv.tools import Tool
from ..model.info import ModelInfo
from ..paths import FIRMWARE_DIR
from ..target.profile import Target, loadable_targets
from . import register
from .base import BackendCaps, CompileRequest, CompileResult

RUNNER = "runner"
MODEL_FILE = "model.pte"


def lower(request: CompileRequest, path: Path) -> None:
    """The model's torch.export program lowered to an ExecuTorch program at `path`."""
    try:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower
        from executorch.exir.passes.constant_prop_pass import constant_prop_pass
    except ImportError:
        raise MissingTool("executorch", "install it with: .venv/bin/pip install -e '.[executorch]', or run "
                                        "./bootstrap.sh.") from None

    from ..atomic import atomic_file
    from ..model.torch_model import load_program

    request.progress(f"lowering {request.model.path.name} to ExecuTorch with the XNNPACK partitioner")
    try:
        # Constants folded first: weights a program computes from parameters (a Keras kernel's transpose) become
        # constants, which XNNPACK needs to take a convolution or a matmul into its delegate. The pass changes the
        # program in place: a copy, as load_program's is cached (the reference runs it).
        program = constant_prop_pass(copy.deepcopy(load_program(request.model.path, request.model.format)))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
    except Exception as err:  # the lowering passes raise many types
        raise BuildError(f"backend executorch cannot lower {request.model.path.name}: {reason(err)}.") from None
    with atomic_file(path) as temporary:
        temporary.write_bytes(lowered.buffer)


def runner(target: Target, progress) -> tuple[Path, executorch_runtime.Runtime]:
    """firmware/executorch_runner.cpp compiled for the target against ExecuTorch's runtime for its architecture
    (cached: it does not depend on the model), and that runtime."""
    gxx = cross.find_tool(target, "g++")
    runtime = executorch_runtime.runtime(target.arch)
    program = cross.cached_program("executorch-runner", target.arch, lambda output: [
        gxx, "-std=c++17", "-O2", "-Wno-deprecated-declarations",
        *(f"-D{define}" for define in executorch_runtime.DEFINES), *(f"-I{d}" for d in runtime.include_dirs),
        FIRMWARE_DIR / "executorch_runner.cpp", "-o", output, f"-L{runtime.lib_dir}",
        # The kernels and the XNNPACK delegate register themselves in static initializers; the runner names none
        # of their symbols, so keep them linked.
        "-Wl,--no-as-needed", "-lexecutorch_kernels_optimized", "-lexecutorch_backend_xnnpack", "-Wl,--as-needed",
        "-lexecutorch", "-lexecutorch_threadpool", "-Wl,-rpath,$ORIGIN/lib",
        "-Wl,--export-dynamic-symbol=et_pal_emit_log_message",  # the runner's log sink replaces the library's
    ], progress, depends_on=f"{executorch_runtime.DIST} {runtime.version}")  # fmt: skip
    return program, runtime


@dataclass(frozen=True)
class ExecutorchBackend:
    name: str = "executorch"
    caps: BackendCaps = BackendCaps(formats=("torch-export",))

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        return []  # the portable kernels cover the ATen core ops a torch.export program decomposes to

    def compile(self, request: CompileRequest) -> CompileResult:
        target, out = request.target, request.bundle_dir
        program, runtime = runner(target, request.progress)  # before the slow lowering: a missing tool fails at once
        lower(request, out / MODEL_FILE)
        shutil.copy(program, out / RUNNER)
        (out / "lib").mkdir()
        for library in runtime.libraries:
            shutil.copy(library, out / "lib" / library.name)
        entry = bundle.Entry(kind="native", argv=[f"./{RUNNER}"], arch=target.arch)
        bundle.write_run_script(out, self.name, target.name, entry)
        return CompileResult(bundle.write_manifest(out, self.name, target.name, entry, request.model.inputs,
                                                   request.model.outputs))

    def versions(self) -> dict[str, str]:
        try:
            versions = {"executorch": executorch_runtime.installed_version()}
        except MissingTool:  # an extra: the build says so when it needs it
            versions = {"executorch": "not installed"}
        return {**versions, **cross.compiler_versions(frozenset(
            f"{target.cross_prefix}g++" for target in loadable_targets() if self.name in target.backends))}

    def tools(self, target: Target) -> list[Tool]:
        return [cross.tool(target.cross_prefix, "g++", "compiles the ExecuTorch runner"),
                executorch_runtime.tool(target.arch)]


register(ExecutorchBackend())
