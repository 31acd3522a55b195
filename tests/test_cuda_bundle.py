"""An x86_64-cuda bundle runs where it is copied, checked without a GPU.

- every library the runner and model.so load, and what those load in turn, is in the bundle where the
  loader looks for it (the RUNPATH of the object that needs it), or is one the board provides: the C
  and C++ runtimes and the NVIDIA driver (libcuda.so.1); the CUDA runtime (libcudart) is bundled;
- model.so carries PTX next to its SASS, which the driver compiles for GPUs newer than the target's;
- model.so is never unloaded (DF_1_NODELETE): unloading it took TVM's CUDA runtime with it before the
  CUDA module it had made was destroyed, and every runner segfaulted at exit on an H200.
"""

import math
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from toolchain.backends import get
from toolchain.backends.base import CompileRequest
from toolchain.backends.tvm.cuda import device_code, find_toolkit
from toolchain.bundle import read_manifest
from toolchain.errors import MissingTool
from toolchain.model import load_model
from toolchain.paths import cache_dir
from toolchain.target.profile import load_target

# Libraries an x86-64 Linux machine with an NVIDIA GPU has: glibc, GCC's C++ runtime, and the driver.
BOARD_PROVIDES = {
    "libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1", "ld-linux-x86-64.so.2",
    "libstdc++.so.6", "libgcc_s.so.1",
    "libcuda.so.1",
}  # fmt: skip


def _dynamic(path: Path) -> tuple[list[str], list[str], str]:
    """DT_NEEDED entries, RUNPATH (or RPATH) folders and FLAGS_1 of an ELF file, read with readelf -d."""
    text = subprocess.run(["readelf", "-d", str(path)], capture_output=True, text=True, check=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", text)
    paths = re.findall(r"\((?:RUNPATH|RPATH)\)\s+Library r(?:un)?path: \[(.*?)\]", text)
    flags = re.findall(r"\(FLAGS_1\)\s+Flags: (.*)", text)
    return needed, [p for entry in paths for p in entry.split(":") if p], " ".join(flags)


def _loaded_libraries(bundle_dir: Path, programs: list[str]) -> tuple[dict[str, Path], list[str]]:
    """What the loader finds for `programs` and everything they need, as ld.so would: ({name: file}, unresolved)."""
    found, unresolved, queue = {}, [], [bundle_dir / p for p in programs]
    while queue:
        elf = queue.pop()
        needed, runpath, _ = _dynamic(elf)
        for name in needed:
            if name in BOARD_PROVIDES or name in found:
                continue
            folders = [Path(d.replace("$ORIGIN", str(elf.parent))) for d in runpath]
            hit = next((f / name for f in folders if (f / name).is_file()), None)
            if hit is None or bundle_dir.resolve() not in hit.resolve().parents:
                unresolved.append(f"{name} (needed by {elf.relative_to(bundle_dir)}, runpath {runpath})")
                continue
            found[name] = hit
            queue.append(hit)
    return found, unresolved


@pytest.fixture(scope="module")
def cuda_bundle(tmp_path_factory, tiny_onnx) -> Path:
    try:
        find_toolkit()
    except MissingTool as err:
        pytest.skip(f"no CUDA toolkit: {err}")
    bundle_dir = tmp_path_factory.mktemp("cuda") / "bundle"
    bundle_dir.mkdir()
    get("tvm").compile(CompileRequest(load_model(tiny_onnx), load_target("x86_64-cuda"), bundle_dir, lambda _: None))
    return bundle_dir


@pytest.mark.slow
def test_bundle_carries_every_library_the_runner_and_model_load(cuda_bundle):
    found, unresolved = _loaded_libraries(cuda_bundle, ["runner", "model.so"])
    assert unresolved == []
    assert {"libtvm_runtime.so", "libtvm_ffi.so", "libtvm_runtime_cuda.so"} <= found.keys()
    assert any(name.startswith("libcudart.so.") for name in found)  # the CUDA runtime travels with the bundle
    # Nothing in lib/ goes unused, and the manifest lists what the board must still provide.
    assert {p.name for p in (cuda_bundle / "lib").iterdir()} == set(found)


@pytest.mark.slow
def test_model_carries_ptx_for_newer_gpus_and_stays_loaded(cuda_bundle):
    arch = load_target("x86_64-cuda").tvm_target["arch"].removeprefix("sm_")
    assert device_code(cuda_bundle / "model.so") == [f"compute_{arch}", f"sm_{arch}"]
    assert "NODELETE" in _dynamic(cuda_bundle / "model.so")[2]


@pytest.mark.slow
def test_runner_ends_without_a_crash_when_cuda_fails(cuda_bundle, tmp_path):
    """With no GPU (the build's stub driver, which fails every call) the runner reports the error and exits 1."""
    stubs = sorted((cache_dir() / "cuda-stub").glob("*/libcuda.so.1"))
    if not stubs:
        pytest.skip("no stub driver was built (this machine has an NVIDIA driver)")
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    for i, spec in enumerate(read_manifest(cuda_bundle)["inputs"]):  # one sample of zeros
        (in_dir / f"input{i}.bin").write_bytes(bytes(math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize))
    env = {**os.environ, "LD_LIBRARY_PATH": str(stubs[-1].parent)}
    proc = subprocess.run([str(cuda_bundle / "runner"), str(in_dir), str(out_dir), "1", "0", "0"], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr[-500:]
    assert "runner: CUDA" in proc.stderr and "Segfault" not in proc.stderr
