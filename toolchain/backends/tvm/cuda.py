"""The tvm backend for NVIDIA GPUs (targets whose tvm_target has kind "cuda"): real device code.

TVM's default CUDA pipeline schedules the kernels for the GPU (dlight); the CUDA toolkit found at
build time ($CUDA_PATH, else nvcc on PATH) compiles them into a fatbin holding SASS for the target's
architecture plus its PTX (which newer GPUs compile at load), never CUDA source that would need a
compiler on the board. The host side is cross-compiled like any tvm bundle.

The bundle (a tvm bundle, shared_runtime.py):
    model.so    host code and the fatbin; it links lib/libtvm_runtime_cuda.so, TVM's CUDA runtime
    runner      the C++ runner with its tensors on the GPU
    lib/        libtvm_runtime.so, libtvm_ffi.so and libtvm_runtime_cuda.so for the board's CPU, and the
                toolkit's CUDA runtime libcudart.so.<major> when the toolkit has it for that CPU
    manifest.json with "cuda": the architectures found in model.so, the toolkit, what the board needs
The board needs the NVIDIA driver (libcuda.so.1, new enough for the toolkit's CUDA version) and, when
the bundle carries none (a Jetson: JetPack provides it), the CUDA runtime (libcudart) of the major
version TVM's wheel was built against.

Building needs TVM's CUDA runtime loaded in this process, and that library links the driver's
libcuda.so.1: on a machine without a GPU a stub driver (templates/libcuda_stub.c.j2) stands in.

This module registers nothing: tvm/__init__.py dispatches here. tvm is imported inside functions.
"""

import ctypes
import os
import platform
import re
import shutil
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ... import bundle, proc
from ...atomic import atomic_file
from ...codegen import render
from ...errors import BadInput, BuildError, MissingTool, output_tail, reason
from ...hostenv import cross, tvm_runtimes, wheels
from ...hostenv.tools import Tool
from ...paths import cache_dir
from ..base import CompileRequest, CompileResult, Progress, ReportSection
from .frontend import imported_module, tvm_target_of
from .shared_runtime import MODEL_LIBRARY, RUNNER, compile_runner

CUDA_RUNTIME_LIBRARY = "libtvm_runtime_cuda.so"
_CUDA_RUNTIME_MEMBER = f"tvm/lib/{CUDA_RUNTIME_LIBRARY}"
# The last CUDA toolkit able to build each architecture the current toolkits dropped.
LAST_TOOLKIT = {
    **dict.fromkeys(("sm_20", "sm_21"), "CUDA 8.0"),
    **dict.fromkeys(("sm_30", "sm_32"), "CUDA 10.2"),
    **dict.fromkeys(("sm_35", "sm_37"), "CUDA 11.8"),
    # CUDA 13.0 dropped Maxwell, Pascal and Volta: Jetson Nano (sm_53), TX2 (sm_62), Xavier (sm_72).
    **dict.fromkeys(("sm_50", "sm_52", "sm_53", "sm_60", "sm_61", "sm_62", "sm_70", "sm_72"), "CUDA 12.9"),
}
# Flags for the code TVM generates (as TVM's own nvcc call passes them): it uses the half and
# bfloat16 operators cuda_fp16.h and cuda_bf16.h hide by default, and constexpr host functions.
_NVCC_FLAGS = [
    "-O3", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__", "-U__CUDA_NO_BFLOAT16_OPERATORS__",
    "-U__CUDA_NO_BFLOAT16_CONVERSIONS__", "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr",
]  # fmt: skip
# Fatbinary container (CUDA's fatbinary_section.h): a header, then entries each holding a kind
# (1 PTX, 2 ELF/SASS) and the architecture number they were built for.
_FATBIN_MAGIC = struct.pack("<I", 0xBA55ED50)
_FATBIN_HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries
_FATBIN_ENTRY = struct.Struct("<HHIQ")  # kind, version, header size, payload size
_FATBIN_ENTRY_ARCH_OFFSET = 28
_FATBIN_KINDS = {1: "compute", 2: "sm"}  # PTX for compute_XX, SASS for sm_XX
_ELF_MACHINES = {"x86_64": 62, "aarch64": 183}  # e_machine of the board's CPU


@dataclass(frozen=True)
class Toolkit:
    root: Path
    nvcc: Path
    version: str  # e.g. "13.0.88"
    architectures: tuple[str, ...]  # the sm_XX it can build, from nvcc --list-gpu-code

    @property
    def label(self) -> str:
        return f"CUDA {self.version}"


def find_toolkit() -> Toolkit:
    """The CUDA toolkit at $CUDA_PATH, else the one whose nvcc is on PATH."""
    if os.environ.get("CUDA_PATH"):
        nvcc = Path(os.environ["CUDA_PATH"]) / "bin" / "nvcc"
        if not nvcc.is_file():
            raise MissingTool(str(nvcc), "CUDA_PATH names no CUDA toolkit; point it at one (e.g. /usr/local/cuda).")
    else:
        found = shutil.which("nvcc")
        if found is None:
            raise MissingTool("nvcc (the CUDA toolkit)", "install NVIDIA's CUDA toolkit "
                              "(https://developer.nvidia.com/cuda-downloads) and set CUDA_PATH or put nvcc on PATH.")
        nvcc = Path(found).resolve()
    version = re.search(r"release [\d.]+, V([\d.]+)", proc.run([nvcc, "--version"]).stdout)
    listed = proc.run([nvcc, "--list-gpu-code"]).stdout.split()
    # nvcc on PATH may be a wrapper script (/usr/local/bin/nvcc execs /usr/local/cuda-13.0/bin/nvcc): its
    # dry run names the toolkit's real top folder, where lib64/ holds the CUDA runtime.
    dry_run = proc.run([nvcc, "--dryrun", "-c", "edgeyard.cu"], check=False)
    top = re.search(r"^#\$ TOP=(.+)$", dry_run.stdout + dry_run.stderr, re.MULTILINE)
    root = Path(top.group(1).strip()).resolve() if top else nvcc.parent.parent
    return Toolkit(root=root, nvcc=nvcc, version=version.group(1) if version else "unknown",
                   architectures=tuple(a for a in listed if a.startswith("sm_")))


def toolkit_tool() -> Tool:
    def locate() -> str:
        toolkit = find_toolkit()
        return f"{toolkit.label} in {toolkit.root}"

    return Tool("nvcc (the CUDA toolkit)", "compiles the GPU kernels (CUDA_PATH, else nvcc on PATH)", locate)


def toolkit_version() -> str:
    """The version of the CUDA toolkit find_toolkit() would use ("not installed" without one), for the cache key."""
    try:
        return find_toolkit().version
    except MissingTool:
        return "not installed"


def check_architecture(arch: str, toolkit: Toolkit) -> None:
    """A clear error when the toolkit cannot build `arch`, naming a toolkit that can."""
    if not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise BadInput(f"'{arch}' is not a CUDA architecture (expected sm_XX, e.g. sm_87 for Jetson Orin).")
    if arch in toolkit.architectures:
        return
    if arch in LAST_TOOLKIT:
        raise MissingTool(f"a CUDA toolkit for {arch}", f"{toolkit.label} cannot build it; {LAST_TOOLKIT[arch]} can: "
                          f"install it and set CUDA_PATH to it.")
    raise MissingTool(f"a CUDA toolkit for {arch}", f"{toolkit.label} builds {', '.join(toolkit.architectures)}; "
                      f"install a newer toolkit and set CUDA_PATH to it.")


def fatbins(data: bytes) -> list[bytes]:
    """Every fatbin container inside a binary (TVM keeps them in its module blob, out of cuobjdump's sight)."""
    found, start = [], data.find(_FATBIN_MAGIC)
    while start != -1:
        _, _, header_size, entries_size = _FATBIN_HEADER.unpack_from(data, start)
        found.append(data[start:start + header_size + entries_size])
        start = data.find(_FATBIN_MAGIC, start + header_size + entries_size)
    return found


def device_code(path: Path) -> list[str]:
    """The device code in every fatbin inside a binary: "sm_87" for SASS, "compute_87" for PTX."""
    found = []
    for fatbin in fatbins(path.read_bytes()):
        _, _, offset, _ = _FATBIN_HEADER.unpack_from(fatbin)
        while offset + _FATBIN_ENTRY.size <= len(fatbin):
            kind, _, entry_header_size, payload_size = _FATBIN_ENTRY.unpack_from(fatbin, offset)
            (arch,) = struct.unpack_from("<I", fatbin, offset + _FATBIN_ENTRY_ARCH_OFFSET)
            if kind in _FATBIN_KINDS:
                found.append(f"{_FATBIN_KINDS[kind]}_{arch}")
            offset += entry_header_size + payload_size
    return sorted(set(found))


def _tvm_lib_dir() -> Path:
    return tvm_runtimes._installed_package_dir("tvm") / "lib"


def _cuda_runtime_library(arch: str, progress: Progress) -> Path:
    """TVM's CUDA runtime for the board's CPU: the installed one, or the one in the `arch` apache-tvm wheel."""
    if arch == platform.machine():
        return _tvm_lib_dir() / CUDA_RUNTIME_LIBRARY
    version = tvm_runtimes.installed_versions()["apache-tvm"]
    library = cache_dir() / "runtimes" / arch / f"cuda-{version}" / CUDA_RUNTIME_LIBRARY
    if library.is_file():
        return library
    if arch not in wheels.PLATFORMS:
        raise BadInput(f"no TVM CUDA runtime is available for architecture '{arch}' "
                       f"(known: {', '.join(wheels.PLATFORMS)}).")
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeyard-wheels-") as download_dir:
        progress(f"downloading the {wheels.PLATFORMS[arch]} wheel of apache-tvm=={version} "
                 f"for {CUDA_RUNTIME_LIBRARY}")
        wheels.download(f"apache-tvm=={version}", wheels.PLATFORMS[arch], Path(download_dir))
        wheels.extract(wheels.find(Path(download_dir), "apache-tvm"), _CUDA_RUNTIME_MEMBER, library)
    return library


def _driver_stub(progress: Progress) -> Path:
    """A libcuda.so.1 that answers CUDA_ERROR_NO_DEVICE, defining what TVM's CUDA runtime takes from the driver."""
    runtime = _tvm_lib_dir() / CUDA_RUNTIME_LIBRARY
    stub = cache_dir() / "cuda-stub" / tvm_runtimes.installed_versions()["apache-tvm"] / "libcuda.so.1"
    if stub.is_file():
        return stub
    progress("building a stub libcuda.so.1 (this machine has no NVIDIA driver)")
    undefined = proc.run(["nm", "-D", "--undefined-only", "--format=posix", runtime],
                         install_hint="run ./bootstrap.sh.").stdout
    # Driver API symbols are cuXxx; cudaXxx come from libcudart (versioned, "@libcudart").
    symbols = sorted({line.split()[0] for line in undefined.splitlines()
                      if line.startswith("cu") and not line.startswith("cuda") and "@" not in line.split()[0]}
                     - {"cuGetErrorName", "cuGetErrorString"})
    stub.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgeyard-cuda-stub-") as work:
        source = render("libcuda_stub.c.j2", Path(work) / "libcuda_stub.c", symbols=symbols)
        with atomic_file(stub) as partial:  # beside the stub: a rename across file systems would fail
            cross.run_tool(["gcc", "-shared", "-fPIC", "-O2", "-Wl,-soname,libcuda.so.1", source, "-o", partial],
                           cwd=Path(work))
    return stub


_loaded_libraries: list[ctypes.CDLL] = []  # held for the life of the process


def _load_cuda_runtime(toolkit: Toolkit, progress: Progress) -> None:
    """Load TVM's CUDA runtime into this process (TVM skips it at import when the driver is missing)."""
    import tvm_ffi

    if tvm_ffi.get_global_func("ffi.Module.load_from_bytes.cuda", allow_missing=True) is not None:
        return
    try:
        _loaded_libraries.append(ctypes.CDLL("libcuda.so.1", mode=ctypes.RTLD_GLOBAL))
    except OSError:
        _loaded_libraries.append(ctypes.CDLL(str(_driver_stub(progress)), mode=ctypes.RTLD_GLOBAL))
    # TVM's wheel links libcudart.so.<major>; the toolkit found provides it even when no loader path names it.
    for cudart in sorted((toolkit.root / "lib64").glob("libcudart.so.*")):
        _loaded_libraries.append(ctypes.CDLL(str(cudart), mode=ctypes.RTLD_GLOBAL))
    try:
        _loaded_libraries.append(ctypes.CDLL(str(_tvm_lib_dir() / CUDA_RUNTIME_LIBRARY), mode=ctypes.RTLD_GLOBAL))
    except OSError as err:
        raise MissingTool("the CUDA runtime TVM's CUDA support links", f"{err}; install the CUDA toolkit of that "
                          f"major version and set CUDA_PATH to it.") from None


class _NvccFatbin:
    """tvm_callback_cuda_compile for one build: nvcc of the toolkit found, SASS and PTX for one architecture."""

    def __init__(self, toolkit: Toolkit, arch: str):
        number = arch.removeprefix("sm_")
        self.argv = [str(toolkit.nvcc), "--fatbin", *_NVCC_FLAGS,
                     "-gencode", f"arch=compute_{number},code=sm_{number}",
                     "-gencode", f"arch=compute_{number},code=compute_{number}"]

    def __call__(self, code: str) -> bytearray:
        with tempfile.TemporaryDirectory(prefix="edgeyard-nvcc-") as work:
            source, fatbin = Path(work) / "kernels.cu", Path(work) / "kernels.fatbin"
            source.write_text(code)
            result = proc.run([*self.argv, "-o", fatbin, source], check=False)
            if result.returncode != 0:
                errors = [line for line in result.stderr.splitlines() if "error" in line]
                detail = " | ".join(errors[:3]) or output_tail(result.stdout, result.stderr)
                raise RuntimeError(f"nvcc failed: {detail}")
            return bytearray(fatbin.read_bytes())

    def __enter__(self):
        import tvm.support.nvcc  # noqa: F401  (registers TVM's own callback, restored on exit)
        import tvm_ffi

        self.previous = tvm_ffi.get_global_func("tvm_callback_cuda_compile")
        tvm_ffi.register_global_func("tvm_callback_cuda_compile", self, override=True)
        return self

    def __exit__(self, *exc):
        import tvm_ffi

        tvm_ffi.register_global_func("tvm_callback_cuda_compile", self.previous, override=True)


def compile_for_gpu(request: CompileRequest) -> CompileResult:
    model, target, bundle_dir = request.model, request.target, request.bundle_dir
    arch = target.tvm_target.get("arch")
    if not isinstance(arch, str) or "host" not in target.tvm_target:
        raise BadInput(f"{target.path}: a CUDA tvm_target needs 'arch' (e.g. \"sm_87\") and 'host' (the board's CPU).")
    # Find the tools before the slow steps, so a missing one fails at once.
    toolkit = find_toolkit()
    check_architecture(arch, toolkit)
    gxx = cross.find_tool(target, "g++")
    runtime_dir = tvm_runtimes.tvm_runtime_dir(target.arch)
    cuda_runtime = _cuda_runtime_library(target.arch, request.progress)
    _load_cuda_runtime(toolkit, request.progress)

    import tvm
    import tvm.support.cc
    from tvm import relax

    ir_module = imported_module(model, request.progress)

    request.progress(f"compiling {model.path.name} with TVM and {toolkit.label} nvcc for {arch}")
    tvm_target = tvm_target_of(target)
    try:
        with tvm_target, _NvccFatbin(toolkit, arch):  # the CUDA codegen reads the architecture from the current target
            executable = tvm.compile(ir_module, target=tvm_target, relax_pipeline=relax.get_default_pipeline(tvm_target))
    except Exception as err:
        raise BuildError(f"TVM could not compile {model.path.name} for {target.name}: {reason(err)}") from err

    lib_dir = bundle_dir / "lib"
    lib_dir.mkdir()
    shutil.copy(cuda_runtime, lib_dir / CUDA_RUNTIME_LIBRARY)
    # libtvm_runtime_cuda.so finds it beside itself (its RUNPATH is $ORIGIN): the board then needs only the driver.
    cudart = _bundled_cudart(toolkit, target.arch)
    if cudart is not None:
        shutil.copy(cudart, lib_dir / cudart.name)
    request.progress(f"linking {MODEL_LIBRARY} with {gxx.name}")
    # model.so names TVM's CUDA runtime, so loading it registers the loader of its fatbin first. It is never
    # unloaded (-z nodelete): TVM unloads it when the program releases it, before it destroys the CUDA module
    # made from its fatbin, whose code is in TVM's CUDA runtime, unloaded with it: a segfault (every runner's
    # exit on an H200; loading and releasing model.so does it without a GPU).
    link_options = ["-Wl,--no-as-needed", f"-L{lib_dir}", "-ltvm_runtime_cuda", "-Wl,-rpath,$ORIGIN/lib",
                    "-Wl,-z,nodelete"]
    try:
        executable.export_library(str(bundle_dir / MODEL_LIBRARY),
                                  fcompile=tvm.support.cc.cross_compiler(str(gxx), options=link_options))
    except RuntimeError as err:  # the compiler's output is in the message
        raise BuildError(f"linking {MODEL_LIBRARY} with {gxx.name} failed: {str(err).strip()}") from err
    embedded = device_code(bundle_dir / MODEL_LIBRARY)
    if f"sm_{arch.removeprefix('sm_')}" not in embedded:
        raise BuildError(f"{MODEL_LIBRARY} holds no {arch} device code (found: {', '.join(embedded) or 'none'}).")

    compile_runner(request, gxx, runtime_dir, device="cuda")
    entry = bundle.Entry(kind="native", argv=[f"./{RUNNER}"], arch=target.arch)
    bundle.write_run_script(bundle_dir, "tvm", target.name, entry)
    cuda_version = ".".join(toolkit.version.split(".")[:2])
    requires = f"an NVIDIA GPU of {arch} or newer and its driver (libcuda.so.1) for CUDA {cuda_version} or newer"
    cuda = {
        "device_code": embedded,
        "format": "fatbin",
        "toolkit": toolkit.label,
        "runtime": f"lib/{cudart.name} ({toolkit.label})" if cudart is not None else None,
        "requires": requires if cudart is not None else f"{requires}, and the CUDA runtime libcudart.so.{_cudart_major()}",
    }
    manifest = bundle.write_manifest(bundle_dir, "tvm", target.name, entry, model.inputs, model.outputs,
                                     extra={"tvm_target": target.tvm_target, "cuda": cuda})
    summary = f"GPU device code: {', '.join(cuda['device_code'])} ({cuda['toolkit']})"
    return CompileResult(manifest, [ReportSection("cuda", cuda, summary)])


def _bundled_cudart(toolkit: Toolkit, arch: str) -> Path | None:
    """The toolkit's libcudart.so.<major> that TVM's CUDA runtime links, when it is built for the board's CPU."""
    library = toolkit.root / "lib64" / f"libcudart.so.{_cudart_major()}"
    if not library.is_file():
        return None
    with open(library, "rb") as f:
        header = f.read(20)
    machine = int.from_bytes(header[18:20], "little") if header[:4] == b"\x7fELF" else None
    return library if machine == _ELF_MACHINES.get(arch) else None


def _cudart_major() -> str:
    """The libcudart major version TVM's CUDA runtime links (its DT_NEEDED entry)."""
    needed = proc.run(["readelf", "-d", _tvm_lib_dir() / CUDA_RUNTIME_LIBRARY],
                      install_hint="run ./bootstrap.sh.").stdout
    match = re.search(r"\[libcudart\.so\.(\d+)\]", needed)
    return match.group(1) if match else "?"
