"""The tvm backend for NVIDIA GPUs: real device code from the CUDA toolkit, a cross-compiled runner.

This machine has the CUDA toolkit but no GPU: the tests inspect what was built (the sm_87 SASS
inside model.so, the runner's CPU) and check that the bundle is reported built, not run.
"""

import json
import os
import platform
import struct
from pathlib import Path

import pytest

from toolchain.backends import get
from toolchain.backends.base import CompileRequest
from toolchain.backends.tvm.cuda import check_architecture, device_code, find_toolkit
from toolchain.pipeline.build import BuildOptions, build
from toolchain.bundle import Entry
from toolchain.errors import MissingTool
from toolchain.model import load_model
from toolchain.runners import get as get_runner
from toolchain.target.settings import with_settings
from toolchain.target.profile import load_target

from conftest import EM_AARCH64, EM_X86_64, elf_machine

EM_CUDA = 190


@pytest.fixture(scope="module")
def toolkit():
    try:
        return find_toolkit()
    except MissingTool as err:
        pytest.skip(f"no CUDA toolkit: {err}")


def _cuda_elf_architectures(binary: Path) -> set[int]:
    """The SM of every CUDA ELF (cubin) embedded in a binary, read from its own header.

    e_flags holds the SM in bits 0-7 up to ELF ABI version 7 and in bits 8-15 from version 8 (CUDA 12.8+).
    """
    data = binary.read_bytes()
    found = set()
    start = data.find(b"\x7fELF", 1)
    while start != -1:
        machine = struct.unpack_from("<H", data, start + 18)[0]
        if machine == EM_CUDA and data[start + 4] == 2:  # ELFCLASS64
            abi_version = data[start + 8]
            flags = struct.unpack_from("<I", data, start + 48)[0]
            found.add((flags >> 8) & 0xFF if abi_version >= 8 else flags & 0xFF)
        start = data.find(b"\x7fELF", start + 1)
    return found


def test_jetson_orin_nano_bundle_holds_sm87_code_and_aarch64_runner(tmp_path, tiny_keras, toolkit, aarch64_runtime):
    result = build(BuildOptions(target="jetson-orin-nano", model=tiny_keras, out=tmp_path / "out"))
    bundle_dir = result.out_dir / "bundle"
    assert _cuda_elf_architectures(bundle_dir / "model.so") == {87}
    assert "__global__" not in (bundle_dir / "model.so").read_bytes().decode("latin-1")  # no CUDA source
    for program in ("runner", "model.so", "lib/libtvm_runtime.so", "lib/libtvm_runtime_cuda.so"):
        assert elf_machine(bundle_dir / program) == EM_AARCH64, program
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["cuda"]["device_code"] == ["compute_87", "sm_87"]  # SASS, and PTX for newer GPUs
    assert manifest["cuda"]["toolkit"] == toolkit.label
    # This toolkit's CUDA runtime is for this machine's CPU, not the board's: JetPack provides the board's.
    assert manifest["cuda"]["runtime"] is None and "libcudart.so.13" in manifest["cuda"]["requires"]
    validation = result.report["validation"]
    assert validation["ran"] is False and validation["status"].startswith("built, not run on target: cuda:")
    assert result.report["cuda"] == manifest["cuda"]
    assert "constexpr DLDevice kDevice{kDLCUDA, 0};" in (bundle_dir / "runner.cpp").read_text()


@pytest.mark.parametrize("arch,toolkit_named", [("sm_53", "CUDA 12.9"), ("sm_72", "CUDA 12.9")])
def test_architecture_the_toolkit_dropped_names_one_that_builds_it(tmp_path, tiny_onnx, toolkit, arch, toolkit_named):
    if arch in toolkit.architectures:
        pytest.skip(f"{toolkit.label} still builds {arch}")
    target = with_settings(load_target("jetson-orin-nano"), {"tvm_target.arch": arch})
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    with pytest.raises(MissingTool, match=toolkit_named) as caught:
        get("tvm").compile(CompileRequest(load_model(tiny_onnx), target, bundle_dir, lambda _: None))
    assert caught.value.exit_code == 3 and not any(bundle_dir.iterdir())


@pytest.mark.fast
def test_toolkit_checks(toolkit):
    assert "sm_87" in toolkit.architectures
    check_architecture("sm_87", toolkit)
    with pytest.raises(MissingTool, match="newer toolkit"):
        check_architecture("sm_999", toolkit)


@pytest.mark.fast
def test_cuda_runner_needs_a_gpu_here(toolkit):
    runner = get_runner("cuda")
    entry = Entry(kind="native", argv=["./runner"], arch=platform.machine())
    reason = runner.unavailable_reason(load_target("x86_64-cuda"), entry)
    assert reason is not None and "GPU" in reason  # this machine has none


@pytest.mark.slow
def test_x86_64_cuda_bundle(tmp_path, tiny_onnx, toolkit):
    target = with_settings(load_target("x86_64-cuda"), {"tvm_target.arch": "sm_89"})
    bundle_dir = tmp_path / "bundle"
    bundle_dir.mkdir()
    manifest = get("tvm").compile(CompileRequest(load_model(tiny_onnx), target, bundle_dir, lambda _: None)).manifest
    assert device_code(bundle_dir / "model.so") == manifest["cuda"]["device_code"] == ["compute_89", "sm_89"]
    assert _cuda_elf_architectures(bundle_dir / "model.so") == {89}
    assert elf_machine(bundle_dir / "runner") == EM_X86_64


def _fake_toolkit(root: Path, version: str) -> Path:
    """A CUDA toolkit folder whose nvcc answers --version, --list-gpu-code and --dryrun like CUDA's own."""
    (root / "bin").mkdir(parents=True)
    nvcc = root / "bin" / "nvcc"
    nvcc.write_text(f"""#!/bin/sh
case "$1" in
  --version) echo "Cuda compilation tools, release {version.rsplit('.', 1)[0]}, V{version}" ;;
  --list-gpu-code) echo sm_80 sm_87 sm_90 ;;
  --dryrun) echo "#\\$ TOP={root}/bin/.." >&2 ;;
esac
""")
    nvcc.chmod(0o755)
    return root


def test_cache_key_includes_the_cuda_toolkit_version(tmp_path, monkeypatch, toolkit):
    assert get("tvm").versions()["cuda-toolkit"] == toolkit.version
    monkeypatch.setenv("CUDA_PATH", str(_fake_toolkit(tmp_path / "cuda-12.9", "12.9.86")))
    assert get("tvm").versions()["cuda-toolkit"] == "12.9.86"  # another toolkit, another build
    monkeypatch.setenv("CUDA_PATH", str(tmp_path / "none"))
    assert get("tvm").versions()["cuda-toolkit"] == "not installed"


def test_toolkit_root_behind_a_wrapper_script(tmp_path, monkeypatch):
    """nvcc on PATH may be a script that execs the toolkit's nvcc: the root (for lib64/libcudart) is the toolkit's."""
    real = _fake_toolkit(tmp_path / "cuda-13.0", "13.0.88")
    wrapper = tmp_path / "usr-local-bin"
    wrapper.mkdir()
    (wrapper / "nvcc").write_text(f'#!/bin/sh\nexec {real}/bin/nvcc "$@"\n')
    (wrapper / "nvcc").chmod(0o755)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", f"{wrapper}:{os.environ['PATH']}")
    found = find_toolkit()
    assert found.root == real.resolve() and found.version == "13.0.88"
