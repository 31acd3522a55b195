"""Human-readable description of a model, for `invoke inspect`."""

from .info import ModelInfo, TensorInfo


def describe(info: ModelInfo) -> str:
    lines = [
        f"model   {info.path}",
        f"format  {info.format}",
        f"sha256  {info.sha256}",
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
