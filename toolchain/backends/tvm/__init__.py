"""Apache TVM (Relax): the model compiled ahead of time for the target, by one of four routes.

    shared_runtime.py  Linux boards with a TVM runtime: model.so for the Relax VM and a C++ runner
    static_driver.py   no TVM runtime (tvm_runtime = "none"): TVM's kernels behind a static C driver,
        firmware.py        ... linked into harness firmware for a microcontroller (os "none")
        static_linux.py    ... linked into one Linux executable (e.g. rpi2)
    cuda.py            NVIDIA GPUs (tvm_target kind "cuda"): device code in model.so
frontend.py imports the model for all of them (int8_import.py gives int8 TFLite ops LiteRT's
arithmetic). This module registers the backend and imports a route only when it compiles.
"""

from ...errors import BadInput
from ...hostenv import cross, tvm_runtimes
from ...hostenv.tools import Tool
from ...model.info import ModelInfo
from ...target.profile import Target, loadable_targets
from .. import register
from .._firmware import firmware_tools
from ..base import BackendCaps, CompileRequest, CompileResult


class TvmBackend:
    name = "tvm"
    # A torch.export program imports directly (frontend.torch); TorchScript comes as ONNX.
    caps = BackendCaps(formats=("tflite", "onnx", "torch-export"), encrypts=True)  # shared runtime on a CPU only

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        from .frontend import unsupported_ops

        return unsupported_ops(model)

    def compile(self, request: CompileRequest) -> CompileResult:
        target = request.target
        if request.model_key is not None and (target.tvm_runtime == "none" or target.tvm_target["kind"] == "cuda"):
            runs = "one static executable" if target.tvm_runtime == "none" else "CUDA kernels"
            raise BadInput(f"backend tvm stores model.so encrypted (--encrypt) only on boards with a TVM runtime on "
                           f"the CPU, and {target.name} runs {runs}.")
        if target.tvm_runtime == "none":  # TVM's kernels behind a static C driver (static_driver.py)
            if target.os == "none":  # in harness firmware
                from .firmware import compile_for_microcontroller

                return compile_for_microcontroller(request)
            from .static_linux import (
                compile_linux_executable,  # in one Linux executable
            )

            return compile_linux_executable(request)
        if target.tvm_target["kind"] == "cuda":  # NVIDIA GPUs: device code built with the CUDA toolkit
            from .cuda import compile_for_gpu

            return compile_for_gpu(request)
        from .shared_runtime import compile_shared

        return compile_shared(request)

    def versions(self) -> dict[str, str]:
        versions = {**tvm_runtimes.installed_versions(), **_compiler_versions()}
        if any("tvm" in t.backends and t.tvm_target.get("kind") == "cuda" for t in loadable_targets()):
            from .cuda import toolkit_version  # the device code is the CUDA toolkit's

            versions["cuda-toolkit"] = toolkit_version()
        return versions

    def tools(self, target: Target) -> list[Tool]:
        if target.tvm_runtime == "none":  # TVM's kernels behind a static C driver, linked by the target's gcc
            return firmware_tools(target) if target.os == "none" else [
                cross.tool(target.cross_prefix, "gcc", "compiles and links the executable")]
        needs = [cross.tool(target.cross_prefix, "g++", "compiles the runner and links model.so"),
                 tvm_runtimes.tool(target.arch)]
        if target.tvm_target["kind"] == "cuda":
            from .cuda import toolkit_tool

            needs.append(toolkit_tool())
        return needs


def _compiler_versions() -> dict[str, str]:
    """Versions of the installed compiler of every target this backend serves (versions() has no target)."""
    return cross.compiler_versions(frozenset(
        f"{target.cross_prefix}{'gcc' if target.tvm_runtime == 'none' else 'g++'}"
        for target in loadable_targets() if "tvm" in target.backends))


register(TvmBackend())
