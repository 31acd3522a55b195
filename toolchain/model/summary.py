"""Human-readable description of a model, for `invoke inspect`."""

from pathlib import Path

from .info import ModelInfo, TensorInfo
from .pinning import UnresolvedShapes


def inspect_model(path: Path, input_shapes: dict[str, tuple[int, ...]] | None) -> str:
    """describe(the model); for one whose shapes cannot be worked out while a dynamic input is left unpinned,
    its inputs as declared and how to pin them: what the user needs next, so not an error (dynamic inputs
    all pinned and still no shapes: the pins are bad input, BadInput)."""
    from . import load_model, model_format, model_sha256

    try:
        return describe(load_model(path, input_shapes))
    except UnresolvedShapes as err:
        rows = [("name", "shape", "dtype")] + [
            (i.name, "x".join("?" if d is None else str(d) for d in i.dims) if i.dims is not None else "unknown rank",
             i.dtype) for i in err.inputs]
        return "\n".join([*_header(path, model_format(path), model_sha256(path)), "",
                          "inputs (? marks a dynamic dimension)", *_table(rows), "",
                          f"outputs, ops and MACs unknown: {err}"])


def _header(path: Path, fmt: str, sha256: str) -> list[str]:
    return [f"model   {path}", f"format  {fmt}", f"sha256  {sha256}"]


def describe(info: ModelInfo) -> str:
    lines = [
        *_header(info.path, info.format, info.sha256),
        "",
        "inputs",
        *tensor_table(info.inputs),
        "",
        "outputs",
        *tensor_table(info.outputs),
        "",
        f"ops ({sum(info.ops.values())} in {len(info.ops)} kinds)",
        *_op_table(info.ops),
        "",
        f"params  {_count(info.params)}",
        f"MACs    {_count(info.macs)} per inference",
    ]
    return "\n".join(lines)


def tensor_table(tensors: list[TensorInfo]) -> list[str]:
    rows = [("name", "shape", "dtype", "quantization")]
    for t in tensors:
        quant = "-" if t.quant is None else f"scale {t.quant[0]:.6g}, zero point {t.quant[1]}"
        rows.append((t.name, "x".join(str(d) for d in t.shape) or "scalar", t.dtype, quant))
    return _table(rows)


def _op_table(ops: dict[str, int]) -> list[str]:
    # Most frequent first; ties by name so the text is stable.
    ordered = sorted(ops.items(), key=lambda item: (-item[1], item[0]))
    return _table([(name, str(count)) for name, count in ordered], right_align_last=True)


def _table(rows: list[tuple[str, ...]], right_align_last: bool = False) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)]
        if right_align_last:
            cells[-1] = row[-1].rjust(widths[-1])
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


def _count(n: int) -> str:
    """Exact count with a short form: 12,501,632 (12.5 M)."""
    for factor, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= factor:
            return f"{n:,} ({n / factor:.3g} {unit})"
    return f"{n:,}"
