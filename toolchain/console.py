"""Text for humans: tables, progress lines, and the mapping of errors to exit codes for the CLI."""

import sys
import time
import traceback
from typing import Callable

from .errors import EdgeyardError, EXIT_BUILD_FAILED


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)])


class Progress:
    """Prints each step as it starts, with the time since the command began (stdout: stderr is for errors)."""

    def __init__(self, stream=sys.stdout):
        self.start = time.monotonic()
        self.stream = stream

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {message}", file=self.stream, flush=True)


def guarded(action: Callable[[], object], debug: bool) -> tuple[object, int, str]:
    """Run action; return (result, exit code, one-sentence error). Tracebacks only when debug."""
    try:
        return action(), 0, ""
    except EdgeyardError as err:
        if debug:
            traceback.print_exc()
        return None, err.exit_code, f"error: {err}"
    except KeyboardInterrupt:
        return None, 130, "interrupted"
    except Exception as err:  # an edgeyard bug: say so in one line, keep the trace for --debug
        if debug:
            traceback.print_exc()
        return None, EXIT_BUILD_FAILED, (f"internal error: {type(err).__name__}: {err} "
                                         "(run again with --debug for the traceback)")


def parse_input_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """['input_1:1x49x10x1', ...] -> {'input_1': (1, 49, 10, 1)}."""
    from .errors import BadInput

    shapes = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise BadInput(f"--input-shape '{spec}' is not NAME:D0xD1x... with positive dimensions.")
        shapes[name] = shape
    return shapes


def parse_names(text: str) -> list[str]:
    """'host, rpi4' -> ['host', 'rpi4']: a comma-separated option such as --targets."""
    return [name.strip() for name in text.split(",") if name.strip()]


def build_options(target, model, backend, out, input_shape, data, samples, threads, quantize=None, precision=None,
                  layer_precision=None, set=None, quantize_io=None, calibration=None, eval_data=None):
    """BuildOptions from the command line's strings (`set` is the repeatable --set KEY=VALUE)."""
    from pathlib import Path

    from .build import BuildOptions
    from .target_settings import parse_settings

    # --precision and --layer-precision are target settings under their own names.
    settings = parse_settings(list(set or []))
    if precision:
        settings["fpga.precision"] = precision
    for item in layer_precision or []:
        name, _, fixed_point = item.partition("=")
        settings[f"fpga.layer_precision.{name}"] = fixed_point
    return BuildOptions(target=target, model=Path(model) if model else None, backend=backend,
                        out=Path(out) if out else None, input_shapes=parse_input_shapes(input_shape or []),
                        data=Path(data) if data else None, samples=samples, threads=threads, quantize=quantize,
                        quantize_io=quantize_io, calibration=Path(calibration) if calibration else None,
                        eval_data=Path(eval_data) if eval_data else None, settings=settings)


def board_connection(host, port, identity, known_hosts, rpc, key):
    """Where bench runs the bundle: None for the target's own runner (here or under emulation)."""
    if not (host or rpc):
        return None
    from pathlib import Path

    from .runners import Connection

    return Connection(host=host, port=port or None, identity=Path(identity) if identity else None,
                      known_hosts=Path(known_hosts) if known_hosts else None, rpc=rpc, key=key)
