"""Keras -> torch.export program (.pt2): the route a Keras model takes to the backends that compile PyTorch programs
(executorch).

Keras 3 runs a model on PyTorch when KERAS_BACKEND is "torch" when it is first imported; a Keras model then is a
torch.nn.Module, which torch.export.export traces at the model's pinned input shapes and torch.export.save writes.
The backend is chosen once per process and the build's own process has TensorFlow's, so the conversion runs in a
child process:

    python -m toolchain.convert.keras_torch MODEL OUTPUT.pt2 DTYPE:DIMxDIM... (one per input, in order)
"""

import os
import sys
from pathlib import Path

from .. import proc
from ..atomic import atomic_file
from ..errors import BuildError, output_tail
from ..model.info import ModelInfo

_TIMEOUT_S = 600


def keras_to_torch_export(info: ModelInfo, target: Path) -> None:
    """The Keras model `info` as a torch.export program at `target` (written atomically)."""
    specs = [f"{t.dtype}:{'x'.join(str(d) for d in t.shape)}" for t in info.inputs]
    with atomic_file(target) as temporary:
        result = proc.run([sys.executable, "-m", __name__, str(info.path), str(temporary), *specs],
                          env={**os.environ, "KERAS_BACKEND": "torch"}, timeout_s=_TIMEOUT_S, check=False)
        if result.returncode != 0 or not temporary.is_file():
            why = output_tail(result.stdout, result.stderr, 1).rstrip(".") or f"exit status {result.returncode}"
            raise BuildError(f"converting {info.path} to a torch.export program (Keras on PyTorch) failed: {why}.")


def main(argv: list[str]) -> int:
    import keras
    import numpy as np
    import torch

    if keras.backend.backend() != "torch":
        sys.exit("KERAS_BACKEND must be torch before Keras is imported.")
    model_path, output, *specs = argv
    try:
        model = keras.saving.load_model(model_path, compile=False)
    except Exception as err:  # Keras raises many types for a file it cannot read
        sys.exit(f"Keras on PyTorch cannot load it ({type(err).__name__}: {err})")

    class KerasModule(torch.nn.Module):
        """The model called in inference mode with its inputs as positional tensors (one, or a list of several)."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(inputs[0] if len(inputs) == 1 else list(inputs), training=False)

    examples = []
    for spec in specs:
        dtype, _, dims = spec.partition(":")
        examples.append(torch.from_numpy(np.zeros([int(d) for d in dims.split("x")], dtype=dtype)))
    try:
        program = torch.export.export(KerasModule().eval(), tuple(examples))
    except Exception as err:  # the tracer raises many types for an op it cannot capture
        sys.exit(f"torch.export cannot trace it ({type(err).__name__}: {err})")
    # Keras' torch backend copies each convolution kernel to channels-last memory (a speed-up in eager PyTorch).
    # The copy changes no value, and lowered to ExecuTorch it fails its dim-order check at run time: drop it.
    for node in list(program.graph.nodes):
        if node.op == "call_function" and node.target == torch.ops.aten.contiguous.default:
            node.replace_all_uses_with(node.args[0])
            program.graph.erase_node(node)
    program.graph_module.recompile()
    torch.export.save(program, output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
