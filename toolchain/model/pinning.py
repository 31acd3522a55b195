"""Pinning dynamic input dimensions to static ones, shared by every model reader."""

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import BadInput

Dims = Sequence[int | None]  # a declared shape: None marks a dynamic (batch or symbolic) dimension


@dataclass(frozen=True)
class DeclaredInput:
    name: str
    dims: Dims | None  # None: the model does not say the input's rank
    dtype: str

    @property
    def dynamic(self) -> bool:
        return self.dims is None or None in self.dims


class UnresolvedShapes(BadInput):
    """The model's shapes cannot be worked out with its dynamic dimensions pinned to 1 (a reshape that needs a
    longer input, a rank nobody declared): `inputs` as declared, for invoke inspect to list."""

    def __init__(self, message: str, inputs: list[DeclaredInput]):
        super().__init__(message)
        self.inputs = inputs


@contextmanager
def pinned_or_unresolved(path: Path, inputs: list[DeclaredInput], input_shapes: dict[str, tuple[int, ...]]):
    """Around a reader's pinning and shape work: a BadInput while some dynamic input is not pinned by
    input_shapes becomes UnresolvedShapes, saying which inputs to pin."""
    try:
        yield
    except BadInput as err:
        unpinned = [i for i in inputs if i.dynamic and i.name not in input_shapes]
        if not unpinned:
            raise
        listed = ", ".join(f"{i.name!r} {format_dims(i.dims)}" for i in unpinned)
        raise UnresolvedShapes(f"{str(err).rstrip('.')}; the dynamic dimensions of {listed} were pinned to 1: "
                               "pin each with --input-shape NAME:SHAPE, its whole shape.", inputs) from None


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
