"""Command-line strings -> typed options: what tasks.py hands the engine (BuildOptions, a board Connection).

Parsing is the only job here: no file is read and nothing heavy is imported, so a mistake in an
option fails before any work starts.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import BadInput
from .runners.base import Connection
from .target.settings import parse_settings

DEFAULT_SAMPLES = 32  # validation samples per build
MAX_SAMPLES = 100_000  # validation samples: more says nothing new and only fills memory and disk
MAX_THREADS = 1024
# A tensor's element count is an int32 in TVM's and the generated C's shapes.
MAX_ELEMENTS = 2**31 - 1


@dataclass
class BuildOptions:
    target: str
    model: Path | None = None  # None: the embedded default model
    backend: str | None = None  # None: the target's default backend
    out: Path | None = None  # None: build/<target>/<model-stem>/<backend>/
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    data: Path | None = None  # .npz with x/y (or x_test/y_test) for validation inputs and accuracy
    samples: int = DEFAULT_SAMPLES
    threads: int = 1
    quantize: str | None = None  # none, fp16, dynamic, int8, int16x8 or mixed; None: none (int8 for int8-only backends)
    quantize_io: str | None = None  # int8: "int8" or "float" inputs and outputs (None: int8 for TFLite, float for ONNX)
    calibration: Path | None = None  # int8 calibration inputs: .npz, .npy or a folder of them (None: `data`)
    eval_data: Path | None = None  # labelled .npz for the quantization's accuracy change (None: `data` when labelled)
    accuracy_budget: float | None = None  # --quantize mixed: accuracy drop allowed, in points (None: 0.5)
    settings: dict[str, object] = field(default_factory=dict)  # changes to the target profile (--set, --precision)
    auto_precision: bool = False  # --precision auto: hls4ml's per-layer types chosen under accuracy_budget
    signing_key: Path | None = None  # None: $EDGEYARD_SIGNING_KEY, else the per-user key if it exists (signing.py)
    encrypt: Path | None = None  # AES-256 key file: the bundle's model stored encrypted (encryption.py); None: plain
    tuning_db: Path | None = None  # tvm: the tuning databases' folder (None: <cache>/tvm-tuning; backends/tvm/tuning.py)



def parse_input_shapes(specs: list[str]) -> dict[str, tuple[int, ...]]:
    """['input_1:1x49x10x1', ...] -> {'input_1': (1, 49, 10, 1)}."""
    shapes = {}
    for spec in specs:
        name, sep, dims = spec.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or min(shape) < 1:
            raise BadInput(f"--input-shape '{spec}' is not NAME:D0xD1x... with positive dimensions.")
        if math.prod(shape) > MAX_ELEMENTS:
            raise BadInput(f"--input-shape '{spec}' has {math.prod(shape):,} elements, more than a tensor can "
                           f"hold ({MAX_ELEMENTS:,}).")
        shapes[name] = shape
    return shapes


def parse_count(option: str, value, low: int, high: int) -> int:
    """An integer option (from the command line's string or the API's int) within [low, high]."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BadInput(f"{option} takes a whole number, not '{value}'.") from None
    if isinstance(value, float) and value != number or not low <= number <= high:
        raise BadInput(f"{option} must be from {low:,} to {high:,}, not {value}.")
    return number


def parse_names(text: str) -> list[str]:
    """'host, rpi4' -> ['host', 'rpi4']: a comma-separated option such as --targets."""
    return [name.strip() for name in text.split(",") if name.strip()]


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4): --shard, the i-th of N shares of a matrix."""
    index, _, count = text.partition("/")
    if not (index.strip().isdigit() and count.strip().isdigit()) or not 1 <= int(index) <= int(count):
        raise BadInput(f"--shard '{text}' is not i/N with 1 <= i <= N, e.g. 2/4.")
    return int(index), int(count)


def parse_growth(text: str) -> float:
    """'5%' or '0.05' -> 0.05: --max-growth, the size growth a matrix cell may show against its baseline."""
    number = text.strip().removesuffix("%")
    try:
        growth = float(number) / (100 if text.strip().endswith("%") else 1)
    except ValueError:
        growth = -1.0
    if not 0 <= growth < float("inf"):
        raise BadInput(f"--max-growth '{text}' is not a growth such as 5% or 0.05.")
    return growth


def scheduler_address(text: str | None) -> str | None:
    """--scheduler: a Dask scheduler's address, tcp://HOST:PORT (tls:// and ws:// too)."""
    if text is None:
        return None
    scheme, _, place = text.partition("://")
    host, _, port = place.rpartition(":")
    if not scheme.isalpha() or not host or "/" in host or not port.isdigit():
        raise BadInput(f"--scheduler '{text}' is not a Dask scheduler address such as tcp://HOST:PORT.")
    return text


def build_options(target, model, backend, out, input_shape, data, samples, threads, quantize=None, precision=None,
                  layer_precision=None, set=None, quantize_io=None, calibration=None, eval_data=None, signing_key=None,
                  accuracy_budget=None, encrypt=None, tuning_db=None):
    """BuildOptions from the command line's strings (`set` is the repeatable --set KEY=VALUE)."""
    # --precision and --layer-precision are target settings under their own names.
    settings = parse_settings(list(set or []))
    if precision and precision != "auto":
        settings["fpga.precision"] = precision
    for item in layer_precision or []:
        name, _, fixed_point = item.partition("=")
        if not name.strip() or not fixed_point.strip():
            raise BadInput(f"--layer-precision takes LAYER=TYPE (e.g. dense=ap_fixed<8,3>), not '{item}'.")
        settings[f"fpga.layer_precision.{name}"] = fixed_point
    return BuildOptions(target=target, model=Path(model) if model else None, backend=backend,
                        out=Path(out) if out else None, input_shapes=parse_input_shapes(input_shape or []),
                        data=Path(data) if data else None, samples=parse_count("--samples", samples, 1, MAX_SAMPLES),
                        threads=parse_count("--threads", threads, 1, MAX_THREADS), quantize=quantize,
                        quantize_io=quantize_io, calibration=Path(calibration) if calibration else None,
                        eval_data=Path(eval_data) if eval_data else None, accuracy_budget=accuracy_budget,
                        settings=settings, auto_precision=precision == "auto",
                        signing_key=Path(signing_key) if signing_key else None,
                        encrypt=Path(encrypt) if encrypt else None,
                        tuning_db=Path(tuning_db) if tuning_db else None)


def board_connection(host, port, identity, known_hosts, rpc, key):
    """Where bench runs the bundle: None for the target's own runner (here or under emulation)."""
    if not (host or rpc):
        return None
    return Connection(host=host, port=port or None, identity=Path(identity) if identity else None,
                      known_hosts=Path(known_hosts) if known_hosts else None, rpc=rpc, key=key)
