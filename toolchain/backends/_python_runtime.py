"""Backends whose bundle is the model file plus a Python runner script for the board's python3.

LiteRT and ONNX Runtime ship no C/C++ headers on PyPI or in Debian 12 (checked: neither ships them), so on an ARM
Linux board they run through their Python packages; the bundle is the model and a generated script.
"""

import platform
import shutil
from dataclasses import dataclass
from importlib import metadata

from .. import bundle, encryption
from ..codegen import render
from ..hostenv import userland
from ..hostenv.tools import Tool
from ..model.info import ModelInfo
from ..target.profile import Target
from .base import BackendCaps, CompileRequest, CompileResult


def tensor_spec(tensors) -> str:
    """Tensors as the Python literal the generated runner scripts read: [(name, shape, dtype), ...]."""
    return repr([(t.name, tuple(t.shape), t.dtype) for t in tensors])


@dataclass(frozen=True)
class PythonRuntimeBackend:
    name: str
    runtime_label: str
    format: str  # the one model format this runtime executes
    package: str  # PyPI distribution the board needs
    env: tuple[tuple[str, str], ...] = ()  # environment the runner script needs on the board
    int16_activations: bool = False  # BackendCaps.int16_activations
    model_suffix: str = ""  # the bundle's model file extension, when it is not the format's name
    encrypts: bool = False  # BackendCaps.encrypts: the runtime loads a model from bytes, so it can be decrypted first

    @property
    def caps(self) -> BackendCaps:
        return BackendCaps(formats=(self.format,), int16_activations=self.int16_activations, encrypts=self.encrypts)

    def write_model(self, request: CompileRequest, path) -> None:
        """The model file the runner script loads: the model itself (a runtime that executes its format)."""
        shutil.copyfile(request.model.path, path)

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        # Both runtimes execute every builtin op of their format; only custom ops need extra kernels
        # (TF "Flex" ops need the TF Select delegate, absent from ai-edge-litert).
        return sorted(op for op in model.ops if op.upper().startswith(("CUSTOM", "FLEX")))

    def compile(self, request: CompileRequest) -> CompileResult:
        out = request.bundle_dir
        model_file = f"model.{self.model_suffix or self.format}"
        script = f"run_{self.name}.py"
        self.write_model(request, out / model_file)
        if request.model_key is not None:
            request.progress(f"encrypting {model_file} ({encryption.ALGORITHM})")
            encryption.encrypt_file(out / model_file, request.model_key)
        render(
            "python_runner.py.j2",
            out / script,
            mode=0o755,
            runtime=self.name,
            runtime_label=self.runtime_label,
            model_file=model_file,
            script_name=script,
            target=request.target.name,
            inputs=tensor_spec(request.model.inputs),
            outputs=tensor_spec(request.model.outputs),
            encryption=encryption.runner_context() if request.model_key else None,
        )
        entry = bundle.Entry(kind="python", argv=["python3", f"./{script}"], arch="any", env=dict(self.env))
        bundle.write_run_script(out, self.name, request.target.name, entry)
        return CompileResult(bundle.write_manifest(
            out, self.name, request.target.name, entry, request.model.inputs, request.model.outputs,
            extra={"requires": {"python": "3.11", "packages": [self.package, "numpy"]},
                   **({"encryption": encryption.manifest_record([model_file])} if request.model_key else {})},
        ))

    def versions(self) -> dict[str, str]:
        return {self.package: metadata.version(self.package)}

    def tools(self, target: Target) -> list[Tool]:
        # The board's python3 is this machine's for its own architecture, the emulated userland's for another.
        if target.arch == platform.machine() or target.arch not in userland.ARCHES:
            return []
        return [userland.tool(target.arch)]

