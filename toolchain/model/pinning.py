"""Pinning dynamic input dimensions to static ones, shared by every model reader."""

from pathlib import Path
from typing import Sequence

from ..errors import BadInput

Dims = Sequence[int | None]  # a declared shape: None marks a dynamic (batch or symbolic) dimension


def check_input_names(path: Path, input_shapes: dict[str, tuple[int, ...]], names: Sequence[str]) -> None:
    """Reject an input_shapes entry naming an input the model does not have."""
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise BadInput(
            f"{path} has no input named {', '.join(repr(n) for n in unknown)}; its inputs are "
            f"{', '.join(repr(n) for n in names)}."
        )


def pin_shape(path: Path, name: str, declared: Dims | None, override: tuple[int, ...] | None) -> tuple[int, ...]:
    """The static shape of one input: dynamic dims become 1 unless `override` gives the whole shape.

    `declared` is None when the model does not even know the input's rank.
    """
    if override is None:
        if declared is None:
            raise BadInput(f"{path} does not say the rank of input {name!r}; give its shape with input_shapes.")
        return tuple(1 if d is None else int(d) for d in declared)
    override = tuple(int(d) for d in override)
    fits = declared is None or (
        len(override) == len(declared) and all(d is None or d == o for d, o in zip(declared, override))
    )
    if not fits or any(d < 1 for d in override):
        raise BadInput(
            f"input_shapes gives {list(override)} for input {name!r} of {path}, "
            f"which does not fit its declared shape {format_dims(declared)}."
        )
    return override


def pinning_repairs(declared: Sequence[Dims | None], pinned: Sequence, input_shapes: dict) -> list[str]:
    """One line per input whose dynamic dimensions were pinned without an input_shapes entry (a repair the
    report lists); `pinned` are the inputs' TensorInfo in the order of `declared`."""
    return [
        f"input {tensor.name!r}: dynamic dimensions {format_dims(dims)} pinned to {list(tensor.shape)}"
        for dims, tensor in zip(declared, pinned)
        if tensor.name not in input_shapes and dims is not None and None in dims
    ]


def format_dims(declared: Dims | None) -> str:
    if declared is None:
        return "of unknown rank"
    return "[" + ", ".join("?" if d is None else str(d) for d in declared) + "]"
