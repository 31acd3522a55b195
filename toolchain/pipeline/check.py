"""`invoke check`: a pre-flight that builds nothing. It reads the model once (no conversion, no compiler) and
answers: its inputs and outputs, which backends of the target take its ops (and which ops stop the others),
and its estimated weights and working memory against the board's flash and RAM, with what to do about each
problem."""

from dataclasses import dataclass, field
from math import prod
from pathlib import Path

from .. import backends
from ..model.info import ModelInfo
from ..target.profile import Target

# Bytes per element of the estimates: an int8 model keeps int8 weights and activations, others float32.
QUANTIZED_BYTES, FLOAT_BYTES = 1, 4


@dataclass
class BackendFit:
    backend: str
    unsupported: list[str] | None  # None: the model is not in one of its formats (converted at build time)
    formats: tuple[str, ...]


@dataclass
class Check:
    target: Target
    model: ModelInfo
    backends: list[BackendFit]
    weights_bytes: int
    activations_bytes: int
    problems: list[str] = field(default_factory=list)  # each: the problem, then what to do about it


def _element_bytes(model: ModelInfo) -> int:
    quantized = any(t.is_quantized for t in model.inputs + model.outputs)
    return QUANTIZED_BYTES if quantized else FLOAT_BYTES


def activation_bytes(model: ModelInfo) -> int:
    """The largest working set of one op: its inputs and its output alive at once (the least any planner can
    do); the inputs and outputs of the model when its reader lists no ops."""
    size = {t.name: prod(t.shape) for t in model.inputs}
    peak = sum(size.values()) + sum(prod(t.shape) for t in model.outputs)
    for node in model.nodes:
        out = prod(node.shape) if node.shape else 0
        for name in node.outputs:
            size[name] = out
        peak = max(peak, out + sum(size.get(name, 0) for name in node.inputs))
    return peak * _element_bytes(model)


def check(target: Target, model: ModelInfo, backend_name: str | None = None) -> Check:
    """Every backend of the target against the model's ops (the problems: only backend_name's, when given)."""
    fits = []
    for name in target.backends:
        backend = backends.get(name)
        formats = backend.caps.formats
        fits.append(BackendFit(name, backend.unsupported_ops(model) if model.format in formats else None, formats))
    result = Check(target, model, fits, model.params * _element_bytes(model), activation_bytes(model))
    able = [fit.backend for fit in fits if fit.unsupported == []]
    for fit in fits:
        if fit.unsupported and backend_name in (None, fit.backend):
            others = [name for name in able if name != fit.backend]
            where = (f"backend{'s' if len(others) > 1 else ''} {', '.join(others)} take{'' if len(others) > 1 else 's'}"
                     f" {'them' if len(fit.unsupported) > 1 else 'it'}: build with --backend {others[0]}" if others
                     else "no backend of this target takes it: change the op in the model or pick another target")
            result.problems.append(f"backend {fit.backend} cannot take op{'s' if len(fit.unsupported) > 1 else ''} "
                                   f"{', '.join(fit.unsupported)}; {where}.")
    flash = target.memory.get("flash_bytes") or target.memory.get("storage_bytes")
    flash_name = "flash" if "flash_bytes" in target.memory else "storage"
    if flash and result.weights_bytes > flash:
        result.problems.append(
            f"the weights need about {result.weights_bytes:,} B and {target.name} has {flash:,} B of {flash_name}; "
            + ("quantize them (--quantize int8: a quarter of the bytes), " if _element_bytes(model) == FLOAT_BYTES
               else "")
            + "prune channels (invoke prune --structured) or pick a board with more.")
    ram = target.memory["ram_bytes"]
    if result.activations_bytes > ram:
        result.problems.append(
            f"the activations need at least {result.activations_bytes:,} B and {target.name} has {ram:,} B of RAM; "
            "use a smaller input (--input-shape), fewer channels (invoke prune --structured) or a board with more.")
    return result


def check_model(target: Target, model_path: Path, input_shapes: dict | None, backend: str | None) -> Check:
    """Load the model (its dynamic dimensions pinned) and check it against the target."""
    from ..model import load_model

    if backend is not None and backend not in target.backends:
        from ..errors import BadInput

        raise BadInput(f"backend '{backend}' does not serve target '{target.name}' "
                       f"(its backends: {', '.join(target.backends)}).")
    return check(target, load_model(model_path, input_shapes), backend)


def check_text(result: Check) -> str:
    """The answer for a human: what the model is, which backends take it, whether it fits, what to do."""
    from ..console import table
    from ..model.summary import tensor_table

    model, target = result.model, result.target
    lines = [f"{model.path} ({model.format}) for {target.name}", "", "inputs", *tensor_table(model.inputs), "",
             "outputs", *tensor_table(model.outputs), ""]
    rows = [[fit.backend, "yes" if fit.unsupported == [] else
             f"no: {', '.join(fit.unsupported)}" if fit.unsupported else
             f"checked at build time, after conversion to {fit.formats[0]}"] for fit in result.backends]
    lines += [table(["backend", f"takes every op of the model ({len(model.ops)} kinds)"], rows), ""]
    flash = target.memory.get("flash_bytes") or target.memory.get("storage_bytes")
    memory_rows = [["weights (estimate: parameters x element size)", f"{result.weights_bytes:,}",
                    f"{flash:,}" if flash else "-"],
                   ["activations (estimate: the largest op's inputs and output)", f"{result.activations_bytes:,}",
                    f"{target.memory['ram_bytes']:,}"]]
    lines += [table(["memory", "bytes", "board (flash or storage / RAM)"], memory_rows), ""]
    lines += [f"repair: {line}" for line in model.repairs]
    lines += [f"problem: {line}" for line in result.problems] or ["no problem found: invoke build should fit."]
    return "\n".join(lines)
