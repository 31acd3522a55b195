"""What a backend is: a compiler or runtime that turns a model into a bundle for a target."""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from ..model.info import ModelInfo
from ..target.profile import Target

Progress = Callable[[str], None]


@dataclass
class CompileRequest:
    model: ModelInfo  # the model in one of the backend's formats (converted if the user's was not)
    target: Target
    bundle_dir: Path  # empty folder to fill; the backend writes files and then the manifest
    progress: Progress


class Backend(Protocol):
    name: str
    # Model formats the backend compiles, most preferred first ("tflite", "onnx").
    formats: tuple[str, ...]
    # Target operating systems it serves ("linux"; later "none" for bare metal).
    target_os: tuple[str, ...]
    description: str

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        """Ops of `model` (already in one of `formats`) this backend cannot import; [] when all are fine."""

    def compile(self, request: CompileRequest) -> dict:
        """Fill request.bundle_dir with a runnable bundle (see toolchain.bundle); return its manifest."""

    def versions(self) -> dict[str, str]:
        """Versions of the tools this backend uses, for the report and the cache key (cheap: no heavy imports)."""
