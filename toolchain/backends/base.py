"""What a backend is: a compiler or runtime that turns a model into a bundle for a target.

A backend module registers one object with a `name`, declared capabilities (`caps`), and three
methods. compile() returns a typed CompileResult: the manifest it wrote plus the backend's own
report sections, so the core never needs to know a backend's keys (adding a backend touches only
its own module, its templates and, for a report section, templates/sections/<key>.md.j2).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ..console import Progress
from ..hostenv.tools import Tool
from ..model.info import ModelInfo
from ..target.profile import Target


@dataclass(frozen=True)
class BackendCaps:
    """What a backend can take, declared once (a misspelled field is a TypeError at import)."""

    formats: tuple[str, ...]  # model formats it compiles, most preferred first ("tflite", "onnx")
    needs_int8: bool = False  # compiles full-integer int8 models only: a float Keras model is quantized first
    int16_activations: bool = False  # runs TFLite's 16-bit activation, 8-bit weight ops (--quantize int16x8)
    # The reference framework the backend is bit-exact with (toolchain/model/reference.py: "tflite-micro" for
    # TFLite models); None: the model format's default (litert for .tflite).
    reference: str | None = None
    encrypts: bool = False  # stores the model AES-256-GCM encrypted on request (--encrypt; toolchain/encryption.py)


@dataclass
class CompileRequest:
    model: ModelInfo  # the model in one of the backend's formats (converted if the user's was not)
    target: Target
    bundle_dir: Path  # empty folder to fill; the backend writes files and then the manifest
    progress: Progress
    signing_key: Path | None = None  # the build's Ed25519 key: firmware for MCUboot boards is signed with it
    model_key: Path | None = None  # the AES-256 key file the model is encrypted with (caps.encrypts), None: plain
    tuning_db: Path | None = None  # tvm: the folder of tuning databases (None: the cache's; backends/tvm/tuning.py)


@dataclass
class ReportSection:
    """A backend's own part of report.json: `data` under `key`, a console line (None: none), and a report.md
    section rendered from templates/sections/<key>.md.j2 with `section` = data."""

    key: str
    data: dict
    summary: str | None = None

    def to_json(self) -> dict:
        return {"key": self.key, "summary": self.summary}


@dataclass
class CompileResult:
    """What compile() leaves: the manifest it wrote (toolchain/bundle.py) and what the build should know."""

    manifest: dict
    sections: list[ReportSection] = field(default_factory=list)
    tolerance: dict | None = None  # validation tolerance by dtype, where the bundle computes less exactly
    not_run: str | None = None  # why no runner can run this bundle, where that is by design (an NPU estimate)


class Backend(Protocol):
    name: str
    caps: BackendCaps

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        """Ops of `model` (already in one of caps.formats) this backend cannot import; [] when all are fine."""

    def compile(self, request: CompileRequest) -> CompileResult:
        """Fill request.bundle_dir with a runnable bundle (see toolchain.bundle)."""

    def versions(self) -> dict[str, str]:
        """Versions of the tools this backend uses, for the report and the cache key (cheap: no heavy imports)."""

    def tools(self, target: Target) -> list[Tool]:
        """What compiling for `target` needs on this machine besides edgeyard's own packages (invoke doctor)."""


def memory_section(memory: dict) -> ReportSection:
    """Flash and RAM of a bare-metal bundle (from its ELF, or an estimate that says so in `source`)."""
    return ReportSection("memory", memory, f"memory: flash {memory['flash_bytes']:,} B, RAM {memory['ram_bytes']:,} B")
