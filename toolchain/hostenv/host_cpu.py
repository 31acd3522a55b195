"""The CPU this machine's LLVM compiles for when a profile says tvm_target.mcpu = "host" (the host profile).

TVM 0.27 accepts mcpu "native" but builds generic SSE2 code for it, so the CPU is named: LLVM's own host CPU
name (znver4, skylake-avx512, ...), with the features that CPU model has and this machine lacks turned off
(mattr "-avx512f", ...): a virtual machine may hide some (an AMD EPYC reported as znver4 without AVX-512), and
code using them dies with SIGILL. Asking LLVM means importing TVM (over a second), which a cached build must
not do: the answer is kept in the user's cache under a hash of /proc/cpuinfo's model and flags, so the same
machine is asked once and another CPU (a moved cache folder) is asked again.
"""

import hashlib
import json
import re
from pathlib import Path

from ..atomic import atomic_write
from ..paths import cache_dir

HOST = "host"  # the mcpu value that stands for this machine's CPU


def _cpu_signature() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    lines = sorted(set(re.findall(r"^(?:model name|flags|cpu family|model)\s*:.*$", text, re.MULTILINE)))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]


def llvm_host_cpu() -> dict:
    """{"mcpu": LLVM's name for this machine's CPU, "mattr": ["-feature", ...] the features that CPU model has and
    this machine lacks}, cached per CPU."""
    known = cache_dir() / "host-cpu" / f"{_cpu_signature()}.json"
    if known.is_file():
        return json.loads(known.read_text())
    import tvm
    import tvm_ffi
    from tvm.target import codegen

    name = str(codegen.llvm_get_system_cpu())
    present = {str(k): bool(v) for k, v in tvm_ffi.get_global_func("tvm.codegen.llvm.GetHostCPUFeatures")().items()}
    model = tvm.target.Target({"kind": "llvm", "mtriple": str(codegen.llvm_get_system_triple()), "mcpu": name})
    lacking = sorted(f for f in codegen.llvm_get_cpu_features(model) if present.get(str(f)) is False)
    answer = {"mcpu": name, "mattr": [f"-{feature}" for feature in lacking]}
    known.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(known, json.dumps(answer) + "\n")
    return answer


def resolved(settings: dict) -> dict:
    """A profile's tvm_target with mcpu "host" replaced by this machine's CPU and the features it lacks (other
    settings as they are)."""
    if settings.get("mcpu") != HOST:
        return settings
    cpu = llvm_host_cpu()
    return {**settings, "mcpu": cpu["mcpu"], "mattr": [*settings.get("mattr", []), *cpu["mattr"]]}
