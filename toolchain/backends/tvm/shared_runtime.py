"""The tvm backend on Linux boards with a TVM runtime (tvm_runtime = "shared", the default): the model
becomes a shared library for the Relax VM plus a small C++ runner.

The bundle (toolchain/bundle.py protocol):
    runner      C++ program from templates/tvm_runner.cpp.j2, linked with rpath $ORIGIN/lib
    model.so    the compiled model (Relax VM executable and its kernels)
    lib/        libtvm_runtime.so and libtvm_ffi.so for the target's architecture
    runner.cpp  the runner's source, for reference (with firmware/bundle_io.h, which it includes)
    run.sh, manifest.json
The CUDA route (cuda.py) reuses the runner. tvm is imported inside functions.
"""

import math
import shutil
from pathlib import Path

from ... import bundle, encryption
from ...codegen import c_identifier, render
from ...errors import BadInput, BuildError, reason
from ...hostenv import cross, host_cpu, openssl, tvm_runtimes
from ...model.info import TensorInfo
from ...paths import FIRMWARE_DIR
from ..base import CompileRequest, CompileResult
from .frontend import DL_TYPES, imported_module
from .tuning import tuned_module

MODEL_LIBRARY = "model.so"
RUNNER = "runner"
BUNDLE_IO_HEADER = "bundle_io.h"  # in firmware/: the bundle protocol's files, shared with the ExecuTorch runner


def _runner_tensors(tensors: list[TensorInfo]) -> list[dict]:
    """What the runner template needs of each tensor; names become C identifiers."""
    taken: set[str] = set()
    rendered = []
    for tensor in tensors:
        if tensor.dtype not in DL_TYPES:
            raise BadInput(f"backend tvm cannot pass tensor '{tensor.name}' of dtype {tensor.dtype} (supported: {', '.join(DL_TYPES)}).")
        dl_code, bits = DL_TYPES[tensor.dtype]
        rendered.append({
            "ident": c_identifier(tensor.name, taken),
            "shape": list(tensor.shape),
            "dl_code": dl_code,
            "bits": bits,
            "bytes": math.prod(tensor.shape) * bits // 8,
        })  # fmt: skip
    return rendered


def compile_runner(request: CompileRequest, gxx: Path, runtime_dir: Path, device: str = "cpu",
                   libcrypto: openssl.Libcrypto | None = None) -> None:
    """The C++ runner; with `libcrypto`, one that decrypts an encrypted model.so in memory (linked statically)."""
    bundle_dir, model, target = request.bundle_dir, request.model, request.target
    render(
        "tvm_runner.cpp.j2",
        bundle_dir / "runner.cpp",
        model_name=c_identifier(model.stem),
        target=target.name,
        inputs=_runner_tensors(model.inputs),
        outputs=_runner_tensors(model.outputs),
        device=device,
        encryption=encryption.runner_context() if libcrypto else None,
    )
    shutil.copy(FIRMWARE_DIR / BUNDLE_IO_HEADER, bundle_dir / BUNDLE_IO_HEADER)
    lib_dir = bundle_dir / "lib"
    lib_dir.mkdir(exist_ok=True)
    for library in ("libtvm_runtime.so", "libtvm_ffi.so"):
        shutil.copy(runtime_dir / library, lib_dir / library)  # follows the host runtime's symlinks
    request.progress(f"compiling the C++ runner with {gxx.name}")
    includes = [f"-I{d}" for d in [*tvm_runtimes.tvm_ffi_include_dirs(), *(libcrypto.include_dirs if libcrypto else [])]]
    cross.run_tool(
        [
            gxx, "-std=c++17", "-O2", *includes, "runner.cpp", *([libcrypto.static_library] if libcrypto else []),
            "-o", RUNNER, "-Llib",
            # model.so calls into libtvm_runtime without naming it: keep it linked though no runner symbol needs it.
            "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi",
            "-Wl,-rpath,$ORIGIN/lib",
        ],
        cwd=bundle_dir,
    )  # fmt: skip




def compile_shared(request: CompileRequest) -> CompileResult:
    """model.so for the Relax VM and the C++ runner, with the board's TVM runtime libraries in lib/."""
    model, target, bundle_dir = request.model, request.target, request.bundle_dir
    # Find the tools before the slow steps, so a missing one fails at once.
    gxx = cross.find_tool(target, "g++")
    runtime_dir = tvm_runtimes.tvm_runtime_dir(target.arch)

    ir_module = imported_module(model, request.progress)
    import tvm
    import tvm.support.cc
    from tvm import relax

    ir_module, tvm_target, tuning = tuned_module(ir_module, target, request.tuning_db, request.progress)
    request.progress(f"compiling {model.path.name} with TVM for {target.name}")
    try:
        executable = tvm.compile(ir_module, target=tvm_target, relax_pipeline=relax.get_default_pipeline(tvm_target))
    except Exception as err:
        raise BuildError(f"TVM could not compile {model.path.name} for {target.name}: {reason(err)}") from err
    request.progress(f"linking {MODEL_LIBRARY} with {gxx.name}")
    try:
        executable.export_library(str(bundle_dir / MODEL_LIBRARY), fcompile=tvm.support.cc.cross_compiler(str(gxx)))
    except RuntimeError as err:  # the compiler's output is in the message
        raise BuildError(f"linking {MODEL_LIBRARY} with {gxx.name} failed: {str(err).strip()}") from err

    libcrypto = None
    if request.model_key is not None:
        libcrypto = openssl.libcrypto(target.arch, request.progress)
        request.progress(f"encrypting {MODEL_LIBRARY} ({encryption.ALGORITHM})")
        encryption.encrypt_file(bundle_dir / MODEL_LIBRARY, request.model_key)
    compile_runner(request, gxx, runtime_dir, libcrypto=libcrypto)
    entry = bundle.Entry(kind="native", argv=[f"./{RUNNER}"], arch=target.arch)
    bundle.write_run_script(bundle_dir, "tvm", target.name, entry)
    encrypted = {"encryption": {**encryption.manifest_record([MODEL_LIBRARY]),
                                "libcrypto": f"{openssl.PACKAGE} {libcrypto.version}"}} if libcrypto else {}
    return CompileResult(bundle.write_manifest(
        bundle_dir, "tvm", target.name, entry, model.inputs, model.outputs,
        extra={"tvm_target": host_cpu.resolved(target.tvm_target), **encrypted}
    ), sections=[tuning] if tuning else [])
