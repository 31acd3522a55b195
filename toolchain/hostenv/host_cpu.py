"""The CPU this machine's LLVM compiles for when a profile says tvm_target.mcpu = "host" (the host profile).

TVM 0.27 accepts mcpu "native" but builds generic SSE2 code for it, so the CPU is named: LLVM's own host CPU
name (znver4, skylake-avx512, ...). Asking LLVM means importing TVM (over a second), which a cached build must
not do: the answer is kept in the user's cache under a hash of /proc/cpuinfo's model and flags, so the same
machine is asked once and another CPU (a moved cache folder) is asked again.
"""

import hashlib
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


def llvm_host_cpu() -> str:
    """LLVM's name for this machine's CPU (tvm.target.codegen.llvm_get_system_cpu), cached per CPU."""
    known = cache_dir() / "host-cpu" / _cpu_signature()
    if known.is_file():
        return known.read_text().strip()
    from tvm.target import codegen

    name = str(codegen.llvm_get_system_cpu())
    known.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(known, name + "\n")
    return name


def resolved(settings: dict) -> dict:
    """A profile's tvm_target with mcpu "host" replaced by the CPU's name (other settings as they are)."""
    if settings.get("mcpu") != HOST:
        return settings
    return {**settings, "mcpu": llvm_host_cpu()}
