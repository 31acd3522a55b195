"""Import repair: an ONNX model put into the form the backends import, every change listed in one line.

It runs between loading (or converting) the model and compiling it, for a user's .onnx and for what
tf2onnx wrote alike. The reference still runs the original model, so a repair that changed the
results fails validation like any other build.

- Opset upgrade (onnx.version_converter): TVM's ONNX frontend reads Slice, Reshape, MatMul, Gemm
  and most other ops only in their opset-13 form and applies that reading to older models too
  (an opset-9 Slice with attribute starts/ends fails to import).
- Pinned input shapes and simplification (onnxslim): the shapes ingest pinned are written into the
  graph, so shape inference makes Shape/Gather/Concat chains constant and onnxslim folds them, and
  with them the "dynamic" Pad, Reshape and Slice operands TVM's frontend rejects.
"""

from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Callable

from ..atomic import atomic_file
from ..errors import reason
from ..model import ModelInfo
from . import ONNX_OPSET, _reload

# The oldest opset whose op forms TVM's ONNX frontend reads; older models are upgraded to ONNX_OPSET.
MIN_ONNX_OPSET = 13


def versions() -> dict[str, str]:
    """Versions of the libraries a repair uses, for the cache key (no import)."""
    return {name: metadata.version(name) for name in ("onnx", "onnxslim")}


def repair(model: ModelInfo, out_dir: Path, progress: Callable[[str], None]) -> tuple[ModelInfo, list[str]]:
    """(the model the backend should compile, one line per repair made); an unrepaired model comes back as is."""
    if model.format != "onnx":
        return model, []
    import onnx

    proto = onnx.load(str(model.path))
    repairs = []
    opset = default_opset(proto)
    if opset is not None and opset < MIN_ONNX_OPSET:
        upgraded = _upgraded(proto, progress)
        if upgraded is not None:
            proto = upgraded
            repairs.append(f"ONNX opset {opset} upgraded to {ONNX_OPSET} (onnx.version_converter)")
    pins = _unpinned_inputs(proto, model)
    slimmed = _slimmed(proto, pins, progress)
    if slimmed is not None:
        if pins:
            repairs.append("pinned input shapes written into the ONNX graph: "
                           + ", ".join(f"{name!r} {list(shape)}" for name, shape in pins.items()))
        change = _op_changes(proto, slimmed)
        if change:
            repairs.append(f"onnxslim {metadata.version('onnxslim')} folded constants and simplified the graph: "
                           f"{change}")
        if pins or change:
            proto = slimmed
    if not repairs:
        return model, []
    progress(f"repaired {model.path.name}: {'; '.join(repairs)}")
    target = Path(out_dir) / f"{model.stem}.repaired.onnx"
    with atomic_file(target) as temporary:
        onnx.save(proto, str(temporary))
    return _reload(target, model), repairs


def default_opset(proto) -> int | None:
    """The version of the default (ai.onnx) operator set the model imports."""
    return next((entry.version for entry in proto.opset_import if entry.domain in ("", "ai.onnx")), None)


def _upgraded(proto, progress):
    """The model at ONNX_OPSET, or None when the converter cannot take it (the backends then see the original)."""
    import onnx
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(proto, ONNX_OPSET)
    except Exception as err:  # the converter raises RuntimeError and its own adapter errors
        progress(f"the ONNX opset stays at {default_opset(proto)}: onnx.version_converter failed ({reason(err)})")
        return None
    # The converter keeps the old IR version, which cannot carry the new opset. Only the default domain changed
    # (and find_min_ir_version_for knows no version of other domains, such as com.microsoft's).
    default = [entry for entry in upgraded.opset_import if entry.domain in ("", "ai.onnx")]
    upgraded.ir_version = max(upgraded.ir_version, onnx.helper.find_min_ir_version_for(default))
    return upgraded


def _unpinned_inputs(proto, model: ModelInfo) -> dict[str, tuple[int, ...]]:
    """Inputs whose shape in the graph is not the static shape ingest pinned, with that shape."""
    declared = {value.name: [d.dim_value for d in value.type.tensor_type.shape.dim] for value in proto.graph.input}
    return {t.name: t.shape for t in model.inputs if declared.get(t.name) != list(t.shape)}


def _slimmed(proto, pins: dict[str, tuple[int, ...]], progress):
    """onnxslim's constant folding and simplification at the pinned input shapes; None when it fails."""
    import onnx
    import onnxslim

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)  # onnxslim edits the model it is given
    try:
        return onnxslim.slim(copy, input_shapes=[f"{name}:{','.join(map(str, shape))}" for name, shape in pins.items()])
    except Exception as err:  # onnxslim surfaces onnx, onnx-graphsurgeon and numpy errors
        progress(f"the ONNX graph is not simplified: onnxslim failed ({reason(err)})")
        return None


def _op_changes(before, after) -> str:
    """'6 -> 2 nodes (Concat -1, Div -1, ...)', or '' when the op histogram did not change."""
    old, new = Counter(n.op_type for n in before.graph.node), Counter(n.op_type for n in after.graph.node)
    deltas = {op: new[op] - old[op] for op in sorted(old | new) if new[op] != old[op]}
    if not deltas:
        return ""
    return (f"{len(before.graph.node)} -> {len(after.graph.node)} nodes ("
            + ", ".join(f"{op} {delta:+d}" for op, delta in deltas.items()) + ")")
