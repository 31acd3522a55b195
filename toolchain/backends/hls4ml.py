"""The hls4ml backend: FPGAs (AMD/Xilinx parts), through hls4ml's HLS C++ for a Keras model.

hls4ml writes an HLS project for AMD Vitis HLS, for the target's part and clock (the fixed-point
types from the target's [fpga] table); g++ then builds hls4ml's bit-accurate C simulation of it against the
project's own ap_types. The C simulation is the emulated run: the bundle's Python runner calls it
through ctypes over the bundle protocol, so validation goes through the ordinary pipeline, with a
tolerance that follows the fixed-point precision (manifest "tolerance").

No resource or latency figure exists without vendor synthesis (`invoke fpga-synth`); the manifest
carries what hls4ml knows without it: every layer's types, reuse factor and weights.

The bundle:
    hls_project/     the HLS project (build_prj.tcl, firmware/ with weights, ap_types, nnet_utils)
    csim.so          its C simulation, built by g++ for this machine
    run_csim.py      the runner (templates/python_runner.py.j2): numpy and ctypes only
    hls4ml.log       hls4ml's messages
    run.sh, manifest.json  with "fpga" (part, clock, types, layers, no estimate) and "tolerance"
"""

import contextlib
import functools
import importlib.metadata
import io
import math
import platform
import re
import shutil
import time
import warnings
from pathlib import Path

from .. import bundle, proc
from ..codegen import c_identifier, render
from ..errors import BadInput, BuildError, MissingTool, reason
from ..hostenv import cross, tools
from ..hostenv.tools import Tool
from ..model.info import ModelInfo
from ..target.profile import Target
from . import register
from ._python_runtime import tensor_spec
from .base import BackendCaps, CompileRequest, CompileResult, ReportSection

PROJECT = "hls_project"
CSIM_LIBRARY = "csim.so"
RUNNER_SCRIPT = "run_csim.py"
LOG = "hls4ml.log"
# The C simulation reads its weights from text files at run time, from the folder this environment
# variable names (the runner sets it), so the bundle can move after the build.
WEIGHTS_VARIABLE = "EDGEYARD_CSIM_WEIGHTS"
# hls4ml's backend for AMD's current HLS tool, and the command that synthesizes its projects (what
# hls4ml's own build() runs: Vitis 2024.1 or later).
HLS_BACKEND = "Vitis"
SYNTHESIS_TOOL = "vitis-run"
SYNTHESIS_HINT = ("it comes with AMD Vitis 2024.1 or later (the free Vitis HLS licence covers C synthesis): install "
                  "it from amd.com and source its settings64.sh; edgeyard cannot install vendor tools.")
# Validation tolerance in units of the narrowest type's least significant bit: rounding errors of
# every layer add up, so a correct design sits within a few dozen LSB of the float model.
TOLERANCE_LSB = 64
# Layers whose data are windows of an image or sequence: hls4ml streams those (io_stream).
_STREAMED_LAYERS = ("Conv", "Pooling")
# Largest softmax look-up table: 2**14 entries (softmax precision follows the design's up to there).
_MAX_TABLE_BITS = 14
_FIXED = re.compile(r"ap_(u?)fixed<\s*(\d+)\s*,\s*(-?\d+)\s*(,[^<>]*)?>")
_INT = re.compile(r"ap_(u?)int<\s*(\d+)\s*>")
NO_ESTIMATE = ("none: hls4ml gives no resource or latency estimate without synthesis; run `invoke fpga-synth` "
               "with the vendor's tools to get them")


def fraction_bits(precision: str) -> int:
    """The fractional bits of an HLS fixed-point type: ap_fixed<16,6> has 10, ap_int<8> none."""
    text = precision.strip()
    if match := _FIXED.fullmatch(text):
        return int(match.group(2)) - int(match.group(3))
    if _INT.fullmatch(text):
        return 0
    raise BadInput(f"'{precision}' is not an HLS fixed-point type (expected e.g. ap_fixed<16,6> or ap_int<8>).")


def tolerance(precisions: list[str]) -> float:
    """Validation tolerance (times max(1, |reference|)): TOLERANCE_LSB of the narrowest type's LSB."""
    return TOLERANCE_LSB * 2.0 ** -min(fraction_bits(p) for p in precisions)


def _softmax_tables(fraction: int, classes: int) -> dict:
    """hls4ml layer settings that make softmax's look-up tables follow the design's precision.

    hls4ml's defaults (18-bit tables, inputs indexed by their top bits) cap softmax's accuracy near
    1e-2 whatever the precision, and its normalized input wraps around when the logits spread over
    more than the type's range. Here the normalized input saturates in [0, 16) (e^-16 is nothing),
    exponentials and their inverse have the design's fractional bits, and the sum has room for
    every class.
    """
    sum_bits = max(1, math.ceil(math.log2(classes))) + 1
    return {
        "TableSize": 2 ** max(1, min(fraction, _MAX_TABLE_BITS)),
        "inp_norm_t": f"ap_ufixed<{fraction + 4},4,AP_RND,AP_SAT>",
        "exp_table_t": f"ap_ufixed<{fraction + 1},1,AP_RND,AP_SAT>",
        "inv_table_t": f"ap_ufixed<{fraction + 1},1,AP_RND,AP_SAT>",
        "inv_inp_t": f"ap_ufixed<{fraction + sum_bits},{sum_bits},AP_RND,AP_SAT>",
        "accum_t": f"ap_ufixed<{fraction + sum_bits},{sum_bits},AP_RND,AP_SAT>",
    }


def _output_width(keras_model, config_name: str) -> int:
    """The last dimension of the Keras layer behind an hls4ml layer name (a fused activation is "<layer>_<activation>")."""
    layers = {layer.name: layer for layer in keras_model.layers}
    layer = layers.get(config_name) or layers.get(config_name.rsplit("_", 1)[0])
    # Not found: assume as many classes as the largest table, so the sum cannot overflow.
    return int(layer.output.shape[-1]) if layer is not None else 2**_MAX_TABLE_BITS


def hls_config(keras_model, fpga: dict) -> dict:
    """hls4ml's per-layer configuration with the target's types: every weight, bias and result in the
    default precision (or the layer's own), accumulators sized by hls4ml so sums never overflow."""
    import hls4ml

    precision = fpga["precision"]
    layer_precision = fpga.get("layer_precision") or {}
    config = hls4ml.utils.config_from_keras_model(keras_model, granularity="name", default_precision=precision,
                                                  backend=HLS_BACKEND)
    layers = config["LayerName"]
    unknown = sorted(set(layer_precision) - set(layers))
    if unknown:
        raise BadInput(f"no layer named {', '.join(unknown)} for a per-layer precision; the layers are: "
                       f"{', '.join(layers)}.")
    reuse = fpga.get("reuse_factor", 1)
    config["Model"]["ReuseFactor"] = reuse
    for name, layer in layers.items():
        own = layer_precision.get(name, precision)
        types = layer.get("Precision", {})
        for key in ("weight", "bias", "result"):
            if key in types and (types[key] == "auto" or name in layer_precision):
                types[key] = own
        if "ReuseFactor" in layer:
            layer["ReuseFactor"] = reuse
        if "exp_table" in types:  # a softmax
            layer.update(_softmax_tables(fraction_bits(own), _output_width(keras_model, name)))
    return config


def _layer_table(hls_model) -> list[dict]:
    """What hls4ml tells of each layer without synthesis."""
    rows = []
    for layer in hls_model.get_layers():
        output = layer.get_output_variable()
        rows.append({
            "name": layer.name,
            "class": layer.class_name,
            "output_shape": [int(d) for d in output.shape],
            "result": str(output.type.precision),
            "types": {name.removesuffix("_t"): str(named.precision) for name, named in layer.types.items()
                      if name.removesuffix("_t") not in ("result", layer.name)},
            "reuse_factor": layer.get_attr("reuse_factor"),
            "weights": sum(int(w.data.size) for w in layer.weights.values()),
        })  # fmt: skip
    return rows


def _build_csim(project_dir: Path, project: str, out: Path) -> float:
    """g++ builds the project's C simulation into `out`; returns the seconds it took.

    As hls4ml's build_lib.sh, except that the weights folder comes from WEIGHTS_VARIABLE at run time
    rather than the project's absolute path at build time.
    """
    gxx = cross.find_program("", "g++")  # this machine's: the C simulation runs here
    started = time.perf_counter()
    cross.run_tool([
        gxx, "-O3", "-fPIC", "-std=c++17", "-fno-gnu-unique", "-Ifirmware/ap_types",
        f'-DWEIGHTS_DIR=getenv("{WEIGHTS_VARIABLE}")', "-shared",
        f"firmware/{project}.cpp", f"{project}_bridge.cpp", "-o", out,
    ], cwd=project_dir)  # fmt: skip
    return time.perf_counter() - started


def io_type_of(model: ModelInfo) -> str:
    """hls4ml's I/O style for a model: streamed windows for convolutions and pooling, else parallel arrays."""
    streamed = any(kind in op for op in model.ops for kind in _STREAMED_LAYERS)
    return "io_stream" if streamed else "io_parallel"


@contextlib.contextmanager
def _hls4ml_errors(model: ModelInfo):
    try:
        yield
    except (BadInput, MissingTool):
        raise
    except Exception as err:  # hls4ml raises bare Exceptions for unsupported layers and settings
        raise BuildError(f"hls4ml could not convert {model.path.name}: {reason(err)}") from err


def convert_keras(keras_model, model: ModelInfo, fpga: dict, project_dir: Path, trace: bool = False):
    """hls4ml's model of `keras_model` for the [fpga] table's part, clock and types, its project in `project_dir`
    (not written yet); `trace`: every layer's output kept for hls4ml's trace() (pipeline/fpga_precision.py)."""
    import hls4ml

    config = hls_config(keras_model, fpga)
    if trace:
        for layer in config["LayerName"].values():
            layer["Trace"] = True
    with _hls4ml_errors(model):
        return hls4ml.converters.convert_from_keras_model(
            keras_model, hls_config=config, output_dir=str(project_dir), project_name=c_identifier(model.stem),
            backend=HLS_BACKEND, io_type=io_type_of(model), part=fpga["part"], clock_period=1000 / fpga["clock_mhz"],
            allow_da_fallback=False)  # distributed arithmetic needs da4ml, an extra not installed


class Hls4mlBackend:
    name = "hls4ml"
    caps = BackendCaps(formats=("keras",))

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        from hls4ml.converters import get_supported_keras_layers
        from hls4ml.converters.keras_v3._base import registry

        supported = set(get_supported_keras_layers()) | {key.rsplit(".", 1)[-1] for key in registry}
        return sorted(op for op in model.ops if op not in supported)

    def compile(self, request: CompileRequest) -> CompileResult:
        model, target, bundle_dir = request.model, request.target, request.bundle_dir
        fpga = target.fpga
        if fpga is None:
            raise BadInput(f"{target.path}: backend hls4ml needs an [fpga] table naming the part, clock and precision.")
        precisions = [fpga["precision"], *(fpga.get("layer_precision") or {}).values()]
        allowed_error = tolerance(precisions)  # also checks every type before the slow steps

        from ..model.tf_model import load_keras

        project = c_identifier(model.stem)
        io_type = io_type_of(model)
        request.progress(f"writing the hls4ml project for {fpga['part']} ({fpga['precision']}, {io_type})")
        messages = io.StringIO()
        with contextlib.redirect_stdout(messages), contextlib.redirect_stderr(messages), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            keras_model = load_keras(str(model.path), model.sha256)
            hls_model = convert_keras(keras_model, model, fpga, bundle_dir / PROJECT)
            with _hls4ml_errors(model):
                hls_model.write()
        (bundle_dir / LOG).write_text(messages.getvalue() + "".join(f"warning: {w.message}\n" for w in caught))

        request.progress("building the C simulation with g++ and the project's ap_types")
        csim_seconds = _build_csim(bundle_dir / PROJECT, project, bundle_dir / CSIM_LIBRARY)
        render("python_runner.py.j2", bundle_dir / RUNNER_SCRIPT, mode=0o755, runtime=self.name,
               runtime_label="hls4ml C simulation", model_file=CSIM_LIBRARY, script_name=RUNNER_SCRIPT,
               target=target.name, project=project, weights_variable=WEIGHTS_VARIABLE,
               weights_dir=f"{PROJECT}/firmware/weights",
               inputs=tensor_spec(model.inputs), outputs=tensor_spec(model.outputs))
        # csim.so is built for this machine's CPU: the runner goes wherever that library runs.
        entry = bundle.Entry(kind="python", argv=["python3", f"./{RUNNER_SCRIPT}"], arch=platform.machine())
        bundle.write_run_script(bundle_dir, self.name, target.name, entry)
        summary = {
            "part": fpga["part"],
            "clock_mhz": fpga["clock_mhz"],
            "hls_backend": HLS_BACKEND,
            "io_type": io_type,
            "precision": fpga["precision"],
            "layer_precision": fpga.get("layer_precision") or {},
            "reuse_factor": fpga.get("reuse_factor", 1),
            "project": PROJECT,
            "csim_build_seconds": round(csim_seconds, 2),
            "resources": None,
            "latency": None,
            "estimate": NO_ESTIMATE,
            "layers": _layer_table(hls_model),
        }
        allowed = {"float32": allowed_error,
                     "basis": f"{TOLERANCE_LSB} LSB of the narrowest fixed-point type ({min(precisions, key=fraction_bits)})"}
        manifest = bundle.write_manifest(
            bundle_dir, self.name, target.name, entry, model.inputs, model.outputs,
            extra={"fpga": summary, "tolerance": allowed, "requires": {"python": "3", "packages": ["numpy"]}},
        )  # fmt: skip
        line = (f"FPGA {summary['part']} at {summary['clock_mhz']} MHz, {summary['precision']}: C simulation built in "
                f"{summary['csim_build_seconds']:.1f} s; resources and latency: {summary['estimate']}")
        return CompileResult(manifest, [ReportSection("fpga", summary, line)], tolerance=allowed)

    def versions(self) -> dict[str, str]:
        try:
            versions = {"hls4ml": importlib.metadata.version("hls4ml")}
        except importlib.metadata.PackageNotFoundError:
            versions = {"hls4ml": "not installed"}
        return {**versions, "g++": _gxx_version()}

    def tools(self, target: Target) -> list[Tool]:
        synthesis = [tools.program(SYNTHESIS_TOOL, SYNTHESIS_HINT, "synthesizes the design (invoke fpga-synth)",
                                   optional=True)] if target.fpga else []
        return [cross.tool("", "g++", "builds the C simulation of the FPGA design"), *synthesis]


@functools.lru_cache(maxsize=1)
def _gxx_version() -> str:
    """The g++ that builds the C simulation (this machine's)."""
    gxx = shutil.which("g++")
    return proc.version(gxx) if gxx else "not installed"


register(Hls4mlBackend())
