"""Model ingest: any supported model file -> ModelInfo.

Reading .tflite and .onnx never imports TensorFlow; only Keras files and SavedModels do.
"""

import hashlib
from pathlib import Path

from ..errors import BadInput
from .info import ModelInfo, TensorInfo

__all__ = ["TORCH_FORMATS", "ModelInfo", "TensorInfo", "load_model", "model_format", "model_sha256"]

SUFFIX_FORMATS = {".keras": "keras", ".h5": "keras", ".tflite": "tflite", ".onnx": "onnx",
                  ".pt2": "torch-export", ".pt": "torchscript", ".pth": "torchscript"}
TORCH_FORMATS = ("torch-export", "torchscript")


def load_model(path: Path, input_shapes: dict[str, tuple[int, ...]] | None = None) -> ModelInfo:
    """Read a Keras (.keras/.h5), SavedModel (folder), TFLite, ONNX or PyTorch (.pt2 torch.export program,
    .pt/.pth TorchScript) model.

    Dynamic dimensions (a -1 batch, symbolic ONNX dims) are pinned to 1 unless `input_shapes`
    gives the whole shape for that input name.
    """
    path = Path(path)
    input_shapes = dict(input_shapes or {})
    fmt = model_format(path)
    sha256 = model_sha256(path)
    if fmt == "tflite":
        from .tflite_reader import read_tflite

        return read_tflite(path, sha256, input_shapes)
    if fmt == "onnx":
        from .onnx_reader import read_onnx

        return read_onnx(path, sha256, input_shapes)
    if fmt in TORCH_FORMATS:
        from .torch_model import read_torch

        return read_torch(path, sha256, fmt, input_shapes)
    from .tf_model import read_keras, read_savedmodel

    return (read_savedmodel if fmt == "savedmodel" else read_keras)(path, sha256, input_shapes)


def model_format(path: Path) -> str:
    """The format of the model at `path`, from its name (or, for a folder, saved_model.pb) without reading it."""
    path = Path(path)
    if not path.exists():
        raise BadInput(f"model {path} does not exist.")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise BadInput(f"{path} is a folder without saved_model.pb, so it is not a SavedModel.")
        return "savedmodel"
    fmt = SUFFIX_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise BadInput(
            f"{path} has an unknown model format {path.suffix or '(no extension)'!r}; "
            "expected .keras, .h5, .tflite, .onnx, .pt2 (torch.export), .pt or .pth (TorchScript) or a SavedModel folder."
        )
    return fmt


def model_sha256(path: Path) -> str:
    """sha256 of a model file, or of a SavedModel folder's files (relative path and content, in path order)."""
    digest = hashlib.sha256()
    if path.is_file():
        files = [(None, path)]
    else:
        files = sorted((p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file())
    for relative, file in files:
        if relative is not None:
            # The size closes each entry, so no two different folders hash the same stream.
            digest.update(f"{relative}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
