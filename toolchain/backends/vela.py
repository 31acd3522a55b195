"""The vela backend: Arm Ethos-U NPUs, through Arm's Vela compiler.

Vela rewrites an int8 TFLite model so that the operators the NPU supports become one custom
"ethos-u" operator each (a command stream plus encoded weights); the rest stay TFLite operators
for the CPU (TFLite Micro). Nothing on this machine runs an Ethos-U, so the bundle is not run:
its figures are Vela's own performance estimate, read from the summary CSV Vela writes.

The bundle:
    <model>_vela.tflite      the optimized model
    <model>.c, <model>.h     the same bytes as a C array with a small header (templates/ethos_u_model.*.j2),
                             for a firmware built with TFLite Micro and Arm's Ethos-U core driver
    vela_summary.csv         Vela's summary: cycles, memory use, bandwidth
    vela.log                 Vela's output (operators on the NPU and the CPU, and why)
    manifest.json            with "estimate" and "memory" (labelled "Vela performance estimate")

Every Vela setting comes from the target's [ethos_u] table: nothing falls back to vela.ini defaults.
"""

import csv
import importlib.metadata
import importlib.util
import re
import sys
import tempfile
from pathlib import Path

from .. import bundle, proc
from ..codegen import c_identifier, render
from ..errors import BadInput, BuildError, MissingTool, output_tail
from ..hostenv.tools import Tool
from ..model.info import ModelInfo
from ..target.profile import Target
from . import register
from .base import (
    BackendCaps,
    CompileRequest,
    CompileResult,
    ReportSection,
    memory_section,
)

ESTIMATE_LABEL = "Vela performance estimate"
SUMMARY = "vela_summary.csv"
LOG = "vela.log"
# TFLite Micro and the Ethos-U driver read the model in place: it must be 16-byte aligned.
MODEL_ALIGNMENT = 16
# TensorType codes of quantized activations (tflite schema: UINT8 3, INT16 7, INT8 9).
_QUANTIZED_TYPES = {3, 7, 9}
_NPU_OPERATOR = "CUSTOM:ethos-u"
_OPERATOR_COUNT = re.compile(r"^(CPU|NPU) operators = (\d+)", re.MULTILINE)
_BYTES_PER_ROW = 12


def _has_quantized_activations(model: ModelInfo) -> bool:
    """Whether any operator takes quantized data: the NPU runs int8/int16 operators only.

    Weights alone do not count: a dynamic-range model has int8 weights and float activations,
    and Vela leaves all of it on the CPU, as it does a float model.
    """
    import tflite

    flatbuffer = tflite.Model.GetRootAsModel(model.path.read_bytes(), 0)
    for g in range(flatbuffer.SubgraphsLength()):
        graph = flatbuffer.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            operator = graph.Operators(o)
            first = operator.Inputs(0) if operator.InputsLength() else -1
            if first >= 0 and graph.Tensors(first).Type() in _QUANTIZED_TYPES:
                return True
    return False


def _vela_argv(settings: dict, model_path: Path, out_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "ethosu.vela",
        "--accelerator-config", settings["accelerator_config"],
        "--config", settings["config_file"],
        "--system-config", settings["system_config"],
        "--memory-mode", settings["memory_mode"],
        "--output-dir", str(out_dir),
        str(model_path),
    ]  # fmt: skip


def _run_vela(settings: dict, model: ModelInfo, out_dir: Path, target) -> str:
    """Run Vela; its output (stdout and stderr) on success."""
    result = proc.run(_vela_argv(settings, model.path, out_dir), check=False)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        last = output_tail(output, None, 1)
        if "CliOptionError: " in last:  # a setting of the target's [ethos_u] table that Vela does not know
            detail = last.partition("CliOptionError: ")[2].strip("'")
            raise BadInput(f"{target.path}: Vela rejects the [ethos_u] settings: {detail}")
        raise BuildError(f"Vela could not compile {model.path.name} (exit status {result.returncode}): {last}")
    return output


def _operator_histogram(path: Path) -> dict[str, int]:
    import tflite

    from ..model.tflite_reader import op_name

    flatbuffer = tflite.Model.GetRootAsModel(path.read_bytes(), 0)
    counts: dict[str, int] = {}
    for g in range(flatbuffer.SubgraphsLength()):
        graph = flatbuffer.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            name = op_name(flatbuffer, graph.Operators(o))
            counts[name] = counts.get(name, 0) + 1
    return counts


def _estimate(summary: dict, log: str, optimized: Path, settings: dict, clock_mhz: int) -> dict:
    """The report's estimate section from Vela's summary CSV row and its log."""
    kib = 1024
    counts = {kind.lower(): int(n) for kind, n in _OPERATOR_COUNT.findall(log)}
    cycles = int(float(summary["cycles_total"]))
    cpu_ops = {op: n for op, n in _operator_histogram(optimized).items() if op != _NPU_OPERATOR}
    return {
        "label": ESTIMATE_LABEL,
        "vela": importlib.metadata.version("ethos-u-vela"),
        **settings,
        "npu_cycles": cycles,
        "clock_mhz": clock_mhz,
        "inference_ms": cycles / (clock_mhz * 1e3),
        # Vela's own time uses its system config's clock; the same when the target's clock matches it.
        "vela_clock_mhz": float(summary["core_clock"]) / 1e6,
        "vela_inference_ms": float(summary["inference_time"]) * 1e3,
        "cycles": {name: int(float(summary[f"cycles_{name}"]))
                   for name in ("npu", "sram_access", "dram_access", "on_chip_flash_access", "off_chip_flash_access")},
        "sram_bytes": round(float(summary["sram_memory_used"]) * kib),
        "dram_bytes": round(float(summary["dram_memory_used"]) * kib),
        "on_chip_flash_bytes": round(float(summary["on_chip_flash_memory_used"]) * kib),
        "off_chip_flash_bytes": round(float(summary["off_chip_flash_memory_used"]) * kib),
        "model_bytes": optimized.stat().st_size,
        "macs": int(float(summary["nn_macs"])),
        "operators": {"npu": counts.get("npu", 0), "cpu": counts.get("cpu", 0), "cpu_ops": cpu_ops},
    }  # fmt: skip


def _render_c_array(request: CompileRequest, optimized: Path, estimate: dict) -> None:
    ident = c_identifier(request.model.stem)
    data = optimized.read_bytes()
    rows = [", ".join(f"0x{b:02x}" for b in data[i:i + _BYTES_PER_ROW]) for i in range(0, len(data), _BYTES_PER_ROW)]
    context = dict(name=ident, NAME=ident.upper(), model_file=optimized.name, target=request.target.name,
                   estimate=estimate, alignment=MODEL_ALIGNMENT, model_bytes=len(data),
                   inputs=[t.to_dict() for t in request.model.inputs],
                   outputs=[t.to_dict() for t in request.model.outputs])
    render("ethos_u_model.h.j2", request.bundle_dir / f"{ident}.h", **context)
    render("ethos_u_model.c.j2", request.bundle_dir / f"{ident}.c", rows=rows, **context)


class VelaBackend:
    name = "vela"
    # The NPU runs int8 models only: a float model is quantized first when calibration data is at hand.
    caps = BackendCaps(formats=("tflite",), needs_int8=True)

    def unsupported_ops(self, model: ModelInfo) -> list[str]:
        # No operator stops Vela: those the NPU cannot run stay on the CPU, and the report lists them.
        return []

    def compile(self, request: CompileRequest) -> CompileResult:
        model, target, bundle_dir = request.model, request.target, request.bundle_dir
        settings = target.ethos_u
        if settings is None:
            raise BadInput(f"{target.path}: backend vela needs an [ethos_u] table naming the NPU's Vela settings.")
        _find_vela()
        if not _has_quantized_activations(model):
            raise BadInput(f"{model.path.name} is a float model and the Ethos-U NPU runs int8 only: build with "
                           f"--quantize int8 and calibration data (--data FILE.npz), or give an int8 .tflite.")
        request.progress(f"compiling {model.path.name} with Vela for {settings['accelerator_config']}")
        with tempfile.TemporaryDirectory(prefix="edgeyard-vela-") as work:
            log = _run_vela(settings, model, Path(work), target)
            summaries = list(Path(work).glob(f"{model.path.stem}_summary_*.csv"))
            optimized = Path(work) / f"{model.path.stem}_vela.tflite"
            if len(summaries) != 1 or not optimized.is_file():
                raise BuildError(f"Vela wrote no summary CSV or optimized model for {model.path.name} in {work}.")
            with open(summaries[0], newline="") as f:
                summary = next(csv.DictReader(f))
            estimate = _estimate(summary, log, optimized, settings, target.clock_mhz)
            (bundle_dir / SUMMARY).write_bytes(summaries[0].read_bytes())
            (bundle_dir / LOG).write_text(log)
            bundled = bundle_dir / optimized.name
            bundled.write_bytes(optimized.read_bytes())
        _render_c_array(request, bundled, estimate)
        # No program to run: the model runs inside the user's firmware (TFLite Micro and Arm's
        # Ethos-U driver), and nothing here emulates the NPU, so no runner takes this entry.
        entry = bundle.Entry(kind="firmware", argv=[], arch=target.arch)
        memory = {"flash_bytes": estimate["model_bytes"], "ram_bytes": estimate["sram_bytes"] + estimate["dram_bytes"],
                  "source": ESTIMATE_LABEL}
        not_run = f"no Ethos-U NPU here; the figures are the {ESTIMATE_LABEL}"
        manifest = bundle.write_manifest(bundle_dir, self.name, target.name, entry, model.inputs, model.outputs,
                                         extra={"estimate": estimate, "memory": memory, "not_run": not_run})
        e = estimate
        summary = (f"{e['label']}: {e['npu_cycles']:,} NPU cycles, {e['inference_ms']:.3f} ms at {e['clock_mhz']} MHz, "
                   f"SRAM {e['sram_bytes']:,} B, operators {e['operators']['npu']} on the NPU, "
                   f"{e['operators']['cpu']} on the CPU")
        return CompileResult(manifest, [memory_section(memory), ReportSection("estimate", estimate, summary)],
                             not_run=not_run)

    def versions(self) -> dict[str, str]:
        try:
            return {"ethos-u-vela": importlib.metadata.version("ethos-u-vela")}
        except importlib.metadata.PackageNotFoundError:
            return {"ethos-u-vela": "not installed"}

    def tools(self, target: Target) -> list[Tool]:
        return [Tool(_VELA, "compiles the model for the Ethos-U NPU", _find_vela)]


_VELA = "Arm Vela (ethos-u-vela)"


def _find_vela() -> str:
    """The installed Vela's version (finding its package imports nothing); MissingTool when it is absent."""
    if importlib.util.find_spec("ethosu") is None:
        raise MissingTool(_VELA,
                          "install it with: .venv/bin/pip install ethos-u-vela, or run ./bootstrap.sh.")
    return importlib.metadata.version("ethos-u-vela")


register(VelaBackend())
