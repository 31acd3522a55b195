"""The executorch backend: a torch.export program lowered to an ExecuTorch .pte with the XNNPACK partitioner (the ops
XNNPACK takes run in its delegate, the rest in ExecuTorch's portable kernels), and a runner script.

ExecuTorch's Python runtime (executorch.runtime) links libtorch, so a board needs torch as well as executorch: the
host here has both (the [executorch] extra); the emulated ARM userland does not (docs/backends.md says why).
"""

from dataclasses import dataclass
from importlib import metadata

from ..errors import BuildError, MissingTool, reason
from . import register
from ._python_runtime import PythonRuntimeBackend
from .base import CompileRequest


@dataclass(frozen=True)
class ExecutorchBackend(PythonRuntimeBackend):
    def write_model(self, request: CompileRequest, path) -> None:
        try:
            from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
            from executorch.exir import to_edge_transform_and_lower
        except ImportError:
            raise MissingTool("executorch", "install it with: .venv/bin/pip install -e '.[executorch]', or run "
                                            "./bootstrap.sh.") from None

        from ..atomic import atomic_file
        from ..model.torch_model import load_program

        request.progress(f"lowering {request.model.path.name} to ExecuTorch with the XNNPACK partitioner")
        try:
            lowered = to_edge_transform_and_lower(load_program(request.model.path, request.model.format),
                                                  partitioner=[XnnpackPartitioner()]).to_executorch()
        except Exception as err:  # the lowering passes raise many types
            raise BuildError(f"backend executorch cannot lower {request.model.path.name}: {reason(err)}.") from None
        with atomic_file(path) as temporary:
            temporary.write_bytes(lowered.buffer)

    def versions(self) -> dict[str, str]:
        try:
            return {"executorch": metadata.version("executorch")}
        except metadata.PackageNotFoundError:  # an extra: the build says so when it needs it
            return {"executorch": "not installed"}


register(ExecutorchBackend(name="executorch", runtime_label="ExecuTorch (XNNPACK)", format="torch-export",
                           package="executorch", model_suffix="pte"))
