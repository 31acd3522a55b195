"""The tvm backend for microcontrollers (targets with os "none"): TVM kernels, a static C driver,
and harness firmware for the board and for its emulator.

Relax's "zero" pipeline fuses the model into TIR kernels, built either as an LLVM object for the
core (the target file's llvm tvm_target, the default: 1.6-2.6x fewer instructions on the MLPerf
Tiny models) or as C (tvm_target {kind = "c"}, compiled by arm-none-eabi-gcc). Int8 layers keep
int8 weights and activations, and each kernel's steps are fused loop by loop so it needs almost no
scratch memory. Lowering main with StaticPlanBlockMemory
gives the activation buffers and the kernel calls in order; templates/micro_model.c.j2 turns them
into a driver where every buffer, tensor and argument list is static: no malloc, no TVM runtime.
The kernels' scratch memory comes from a static arena sized from the lowered kernels.

The bundle:
    firmware.elf, firmware.bin  harness firmware linked for the board's memory map (`invoke flash`)
    firmware-qemu.elf           the same firmware linked for the emulator's (what qemu-system runs)
    src/                        the model as C for your own firmware: <name>.h (the API), <name>.c
                                (driver), <name>_kernels.c or .o, <name>_weights.S and .bin, the
                                harness, and the TVM headers they include
    manifest.json               with "memory" (flash and RAM from the board image) and "firmware"

This module registers nothing: tvm.py dispatches here. tvm is imported inside functions.
"""

import importlib
import math
import shutil
import struct
import tempfile
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .. import bundle, cross
from ..codegen import c_identifier, render
from ..errors import BadInput, BuildError
from ..model.info import ModelInfo, TensorInfo
from ..paths import PROJECT_ROOT
from ..targets import Target
from .base import CompileRequest
from .tvm import _DL_TYPES, _first_line, _static_signature, imported_module

FIRMWARE_DIR = PROJECT_ROOT / "firmware"
LINKER_SCRIPTS_DIR = FIRMWARE_DIR / "ld"
FIRMWARE_SOURCES = ("startup.c", "semihosting.c", "cycles.c")
SOURCES = "src"
BOARD_IMAGE = "firmware.elf"
BOARD_BINARY = "firmware.bin"
EMULATOR_IMAGE = "firmware-qemu.elf"

# TVM's kernels assume 64-byte aligned tensors (its kAllocAlignment; the LLVM code carries the
# assumption as llvm.assume), so every buffer, weight, input and output is aligned so.
ALIGNMENT = 64
ROUTES = {"llvm": "LLVM object kernels", "c": "C kernels"}
CFLAGS = ["-O2", "-g", "-std=gnu11", "-ffunction-sections", "-fdata-sections"]
# Headers the kernels and the driver include, as (package, path inside its include folder).
TVM_HEADERS = (
    ("tvm_ffi", "tvm/ffi/c_api.h"),
    ("tvm_ffi", "tvm/ffi/extra/c_env_api.h"),
    ("tvm_ffi", "dlpack/dlpack.h"),
    ("tvm", "tvm/runtime/base.h"),
    ("tvm", "tvm/runtime/c_backend_api.h"),
)
LARGEST_SHOWN = 8  # consumers listed in the manifest; the error names the first few
NAMED_IN_ERROR = 4


@dataclass
class _DriverTensor:
    """One static DLTensor of the driver."""

    shape: tuple[int, ...]
    dtype: str
    buffer: str | None = None  # symbol of the storage or weight it points into; None: set per run
    offset: int = 0
    input: int | None = None  # index of the model input it views
    output: int | None = None  # index of the model output written in place


@dataclass
class _Weight:
    symbol: str
    data: bytes
    offset: int = 0  # in the weights blob


@dataclass
class _Plan:
    """The static memory plan and call sequence of the model's main function."""

    storages: list[dict] = field(default_factory=list)  # {"symbol", "bytes"}
    weights: list[_Weight] = field(default_factory=list)
    tensors: list[_DriverTensor] = field(default_factory=list)
    calls: list[dict] = field(default_factory=list)  # {"kernel": symbol, "tensors": [tensor index]}
    output_copies: list[dict] = field(default_factory=list)  # {"io_index", "tensor"}


def compile_for_microcontroller(request: CompileRequest) -> dict:
    model, target, bundle_dir = request.model, request.target, request.bundle_dir
    route = target.tvm_target.get("kind")
    if route not in ROUTES:
        raise BadInput(f"{target.path}: tvm_target kind '{route}' cannot make microcontroller kernels; "
                       f"use {' or '.join(repr(r) for r in ROUTES)}.")
    # Find the tools before the slow steps, so a missing one fails at once.
    tools = {tool: cross.find_tool(target, tool) for tool in ("gcc", "objcopy")}
    name = _model_identifier(model.stem)

    ir_module = int8_operands(imported_module(model, request.progress))

    request.progress(f"planning static memory and building {ROUTES[route]} for {target.name}")
    kernels, main, kernel_symbols = _lower(ir_module, name, model)
    plan = _static_plan(main, model, name, kernel_symbols)
    src = bundle_dir / SOURCES
    src.mkdir()
    arena_bytes, arena_max_live = _build_kernels(kernels, target, route, src / f"{name}_kernels.{_suffix(route)}")
    _copy_tvm_headers(src / "include")
    context = _render_sources(src, name, model, target, route, plan, arena_bytes, arena_max_live)

    with tempfile.TemporaryDirectory(prefix="edgeyard-firmware-") as work:
        objects = _compile_objects(Path(work), src, name, route, target, tools["gcc"])
        request.progress(f"linking the harness firmware for {target.name}")
        board_image = bundle_dir / BOARD_IMAGE
        _link_board_image(objects, target, tools["gcc"], board_image, Path(work))
        memory = _memory(board_image, target, context)
        _check_fits(memory, model, target)
        cross.run_tool([tools["objcopy"], "-O", "binary", BOARD_IMAGE, BOARD_BINARY], cwd=bundle_dir)
        images = {"board": BOARD_IMAGE, "board_binary": BOARD_BINARY}
        if target.emulator:
            emulator_objects = [*objects["common"], objects["harness_emulator"]]
            _link(emulator_objects, target, target.emulator["linker_script"], tools["gcc"],
                  bundle_dir / EMULATOR_IMAGE, Path(work))
            images["emulator"] = EMULATOR_IMAGE

    entry_image = images.get("emulator", BOARD_IMAGE)
    entry = bundle.Entry(kind="firmware", argv=[f"./{entry_image}"], arch=target.arch)
    firmware = {"images": images, "kernels": route, "model_identifier": name}
    return bundle.write_manifest(bundle_dir, "tvm", target.name, entry, model.inputs, model.outputs,
                                 extra={"tvm_target": target.tvm_target, "memory": memory, "firmware": firmware})


def _model_identifier(stem: str) -> str:
    """The C name of the model: its file stem, sanitized; an identifier starting with "_" is
    reserved at file scope in C, so such a name gets a prefix."""
    name = c_identifier(stem)
    return f"model{name}" if name.startswith("_") else name


def _suffix(route: str) -> str:
    return "c" if route == "c" else "o"


# ---------- Relax -> kernels and the static plan ----------


def int8_operands(ir_module):
    """Convolutions and dense layers on the int8 data and weights themselves.

    The int8 import (tvm_tflite_import.py) computes them, and the window sums of average pools,
    on (x - zero point) in int32 with int32 weights: four times the flash of the int8 weights,
    and an int32 copy of each activation in RAM. The same sums come from the int8 operands:
    sum((x - z) w) = sum(x w) - z sum(w), with padding made explicit and filled with the zero
    point (the value that stands for 0).
    """
    import numpy as np
    from tvm import relax
    from tvm.relax.dpl import is_const, is_op, rewrite_call, wildcard

    data = wildcard()
    zero_point = is_const()
    widened = is_op("relax.astype")(data)
    operand = is_op("relax.subtract")(widened, zero_point) | widened  # the average pool's sums have no zero point
    flattened = is_op("relax.reshape")(operand, wildcard())
    weight = is_const()
    conv = is_op("relax.nn.conv2d")(operand, weight)
    dense = is_op("relax.matmul")(operand | flattened, weight)
    bias = is_const()
    biased = is_op("relax.add")(conv | dense, bias)

    def rewrite(expr, matches):
        x, w = matches[data], matches[weight].value.numpy()
        if str(x.ty.dtype) != "int8" or w.dtype != np.int32 or w.size == 0 or w.min() < -128 or w.max() > 127:
            return expr
        zero = int(matches[zero_point].value.numpy()) if zero_point in matches else 0
        kernel = relax.const(w.astype(np.int8))
        if conv in matches:
            a = matches[conv].attrs
            if a.data_layout != "NHWC":
                return expr
            out_axis = a.kernel_layout.index("O")
            top, left, bottom, right = (int(p) for p in a.padding)
            if top or left or bottom or right:
                x = relax.op.nn.pad(x, [0, 0, top, bottom, left, right, 0, 0], pad_value=float(zero))
            total = relax.op.nn.conv2d(x, kernel, strides=a.strides, padding=[0, 0, 0, 0], dilation=a.dilation,
                                       groups=a.groups, data_layout=a.data_layout, kernel_layout=a.kernel_layout,
                                       out_layout=a.out_layout, out_dtype="int32")
        else:
            out_axis = 1
            if flattened in matches:
                x = relax.op.reshape(x, matches[flattened].args[1])
            total = relax.op.matmul(x, kernel, out_dtype="int32")
        weight_sums = w.astype(np.int64).sum(axis=tuple(a for a in range(w.ndim) if a != out_axis))
        offsets = matches[bias].value.numpy().astype(np.int64).reshape(-1) if bias in matches else 0
        offsets = offsets - zero * weight_sums
        if np.abs(offsets).max() >= 2**31:
            return expr
        return relax.op.add(total, relax.const(offsets.astype(np.int32)))

    for global_var, function in list(ir_module.functions.items()):
        if isinstance(function, relax.Function):
            # Biased ones first, so the zero point's term joins the bias in one constant.
            for pattern in (biased, conv, dense):
                function = rewrite_call(pattern, rewrite, function)
            ir_module[global_var] = function
    return ir_module


def _lower(ir_module, name: str, model: ModelInfo):
    """(TIR kernels with C symbols, main lowered to explicit storage, tensors and kernel calls,
    kernel name -> C symbol)."""
    import tvm
    from tvm import relax

    try:
        fused = relax.get_pipeline("zero")(ir_module)
        lowered = tvm.transform.Sequential([
            relax.transform.RewriteDataflowReshape(),
            relax.transform.ToNonDataflow(),
            relax.transform.RemovePurityChecking(),
            relax.transform.CallTIRRewrite(),
            relax.transform.StaticPlanBlockMemory(),
            relax.transform.DeadCodeElimination(),
        ])(fused)
    except Exception as err:
        raise BuildError(f"TVM could not compile {model.path.name}: {_first_line(err)}") from err
    taken: set[str] = set()
    kernels, symbols = {}, {}
    for global_var, function in lowered.functions.items():
        if isinstance(function, tvm.tirx.PrimFunc):
            # The kernel's C symbol carries the model's name, so two models can share a firmware.
            symbols[global_var.name_hint] = c_identifier(f"{name}_{global_var.name_hint}", taken)
            kernels[global_var] = _fuse_loops(function).with_attr("global_symbol", symbols[global_var.name_hint])
    return tvm.IRModule(kernels), lowered["main"], symbols


def _fuse_loops(kernel):
    """A fused kernel computes each of its steps over the whole tensor into a buffer of its own
    (a padded copy, the int32 sums, the rescaled floats...): all in the workspace arena at once.
    Inline the steps into the ones that use them, and compute each reduction's elementwise
    consumer right after the reduction of one output element, so the lowering shrinks the sums
    to one element. Only where the data a step needs is exactly what it is given: a step that
    changes the shape (a trailing pad) keeps its input buffer. The arithmetic, and so the
    results, are unchanged."""
    from tvm import s_tir, tirx

    schedule = s_tir.Schedule(kernel)
    root = schedule.get_sblock("root")

    def output_shape(block) -> list[int]:
        return [int(d) for d in schedule.get(block).writes[0].source.shape]

    def is_reduction(block) -> bool:
        return any(axis.iter_type != tirx.IterVar.DataPar for axis in schedule.get(block).iter_vars)

    for block in schedule.get_child_blocks(root):
        consumers = schedule.get_consumers(block)
        if all(is_reduction(c) or output_shape(c) == output_shape(block) for c in consumers):
            try:
                schedule.compute_inline(block)
            except s_tir.ScheduleError:  # a reduction, or the block writing the kernel's output
                pass
    for block in schedule.get_child_blocks(root):
        consumers = schedule.get_consumers(block)
        kinds = [axis.iter_type for axis in schedule.get(block).iter_vars]
        spatial = next((i for i, kind in enumerate(kinds) if kind != tirx.IterVar.DataPar), len(kinds))
        if (len(consumers) != 1 or spatial in (0, len(kinds)) or is_reduction(consumers[0])
                or output_shape(consumers[0]) != output_shape(block)):
            continue
        try:  # TVM's operators put a reduction's spatial loops first: after them, one output element is done
            schedule.reverse_compute_at(consumers[0], schedule.get_loops(block)[spatial - 1])
        except s_tir.ScheduleError:  # a loop nest this does not know: the kernel keeps its buffer
            pass
    return schedule.mod["main"]


def _static_plan(main, model: ModelInfo, name: str, kernel_symbols: dict[str, str]) -> _Plan:
    """Walk the lowered main: storages, weights, tensors and the kernel calls, in order."""
    import tvm
    from tvm import relax

    ops = {op: tvm.ir.Op.get(f"relax.{op}") for op in
           ("memory.alloc_storage", "memory.alloc_tensor", "builtin.alloc_tensor", "reshape")}
    plan = _Plan()
    tensor_of: dict = {}  # relax Var -> index into plan.tensors
    storage_of: dict = {}  # relax Var -> storage symbol
    weight_tensors: dict = {}  # content key -> tensor index
    taken: set[str] = set()

    def add_tensor(var_type, **where) -> int:
        shape, dtype = _static_signature(var_type)
        if shape is None:
            raise BuildError(f"TVM left a tensor of {model.path.name} with a dynamic shape; pin the inputs' shapes.")
        plan.tensors.append(_DriverTensor(shape, str(dtype), **where))
        return len(plan.tensors) - 1

    def weight_tensor(constant, kernel: str, position: int) -> int:
        array = constant.value.numpy()
        data = array.tobytes()
        key = (array.dtype.str, array.shape, data)
        if key not in weight_tensors:
            symbol = c_identifier(f"{kernel}_const{position}", taken)
            plan.weights.append(_Weight(symbol, data))
            weight_tensors[key] = add_tensor(constant.ty, buffer=symbol)
        return weight_tensors[key]

    returned = _returned_roots(main, ops["reshape"])
    for i, param in enumerate(main.params):
        tensor_of[param] = add_tensor(param.ty, input=i)
    for block in main.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, relax.Var):
                tensor_of[var] = tensor_of[value]
            elif isinstance(value, relax.Call) and value.op.same_as(ops["memory.alloc_storage"]):
                symbol = c_identifier(f"{name}_activations{len(plan.storages)}", taken)
                plan.storages.append({"symbol": symbol, "bytes": int(value.args[0].values[0])})
                storage_of[var] = symbol
            elif isinstance(value, relax.Call) and value.op.same_as(ops["memory.alloc_tensor"]):
                offset = int(value.args[1].value)
                if offset % ALIGNMENT:
                    raise BuildError(f"TVM's memory plan for {model.path.name} placed a tensor at offset {offset}, "
                                     f"which the kernels' {ALIGNMENT}-byte alignment does not allow.")
                tensor_of[var] = add_tensor(var.ty, buffer=storage_of[value.args[0]], offset=offset)
            elif isinstance(value, relax.Call) and value.op.same_as(ops["builtin.alloc_tensor"]):
                if var in returned:  # written in place into the caller's output buffer
                    tensor_of[var] = add_tensor(var.ty, output=returned.pop(var))
                else:
                    symbol = c_identifier(f"{name}_activations{len(plan.storages)}", taken)
                    shape, dtype = _static_signature(var.ty)
                    plan.storages.append({"symbol": symbol, "bytes": _bytes(shape, str(dtype))})
                    tensor_of[var] = add_tensor(var.ty, buffer=symbol)
            elif isinstance(value, relax.Call) and value.op.same_as(ops["reshape"]):
                viewed = plan.tensors[tensor_of[value.args[0]]]
                tensor_of[var] = add_tensor(var.ty, buffer=viewed.buffer, offset=viewed.offset,
                                            input=viewed.input, output=viewed.output)
            elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
                kernel = kernel_symbols[value.op.name_hint]
                arguments = []
                for position, argument in enumerate(value.args):
                    if isinstance(argument, tvm.ir.GenericConst):
                        arguments.append(weight_tensor(argument, kernel, position))
                    elif isinstance(argument, relax.Var):
                        arguments.append(tensor_of[argument])
                    else:
                        raise BuildError(f"the static driver cannot pass a {type(argument).__name__} to kernel "
                                         f"{value.op.name_hint} of {model.path.name}.")
                plan.calls.append({"kernel": kernel, "tensors": arguments})
            else:
                what = value.op.name if isinstance(value, relax.Call) and hasattr(value.op, "name") else type(value).__name__
                raise BuildError(f"the static driver cannot express {what} in {model.path.name}'s lowered main.")
    for var, io_index in returned.items():  # outputs not written in place: copied after the last kernel
        plan.output_copies.append({"io_index": io_index, "tensor": tensor_of[var]})
    offset = 0
    for weight in plan.weights:
        weight.offset = offset
        offset += len(weight.data)
    return plan


def _returned_roots(main, reshape_op) -> dict:
    """The variables main returns, traced back through aliases and reshapes -> output index."""
    from tvm import relax

    source = {}
    for block in main.body.blocks:
        for binding in block.bindings:
            value = binding.value
            if isinstance(value, relax.Var):
                source[binding.var] = value
            elif isinstance(value, relax.Call) and value.op.same_as(reshape_op):
                source[binding.var] = value.args[0]
    result = main.body.body
    fields = list(result.fields) if isinstance(result, relax.Tuple) else [result]
    roots = {}
    for index, var in enumerate(fields):
        while var in source:
            var = source[var]
        roots.setdefault(var, index)  # a tensor returned twice is written once and copied once
    return roots


def _bytes(shape: tuple[int, ...], dtype: str) -> int:
    return math.prod(shape) * _DL_TYPES[dtype][1] // 8


def _build_kernels(kernels, target: Target, route: str, out_path: Path) -> tuple[int, int]:
    """Write the kernels (C source or object) to out_path; return the workspace arena they need
    (bytes, most allocations live at once), read from the lowered TIR."""
    import tvm
    import tvm_ffi

    tvm_target = tvm.target.Target({"kind": "c"} if route == "c" else target.tvm_target)
    alloc_workspace = tvm.ir.Op.get("tirx.TVMBackendAllocWorkspace")
    try:
        # tvm.tirx.build's steps, split so the lowered kernels can be read before code generation.
        with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
            bound = tvm.tirx.transform.BindTarget(tvm_target.with_host(tvm_target))(kernels)
            passes, finalize_host_passes, _ = tvm.tirx.get_tir_pipeline("default")
            lowered = finalize_host_passes()(passes(bound))
            runtime_module = importlib.import_module("tvm.tirx.build").codegen_build(lowered, tvm_target)
    except Exception as err:
        raise BuildError(f"TVM could not build the kernels for {target.name}: {_first_line(err)}") from err
    arena_bytes, max_live = 0, 1
    for function in lowered.functions.values():
        sizes = []
        tvm_ffi.structural_walk(function.body, [(tvm.ir.Call, lambda call: sizes.append(call.args[2])
                                                  if call.op.same_as(alloc_workspace) else None)])
        if not all(isinstance(size, tvm.tirx.IntImm) for size in sizes):
            raise BuildError("a TVM kernel allocates a workspace of dynamic size; the static arena cannot hold it.")
        # Every allocation of a kernel live at once: an upper bound of the kernel's peak.
        arena_bytes = max(arena_bytes, sum(_aligned(int(size)) for size in sizes))
        max_live = max(max_live, len(sizes))
    if route == "c":
        out_path.write_text(runtime_module.inspect_source())
    else:
        runtime_module.write_to_file(str(out_path))
    return max(arena_bytes, ALIGNMENT), max_live  # a C array cannot be empty


def _aligned(size: int) -> int:
    return -(-size // ALIGNMENT) * ALIGNMENT


def _copy_tvm_headers(include_dir: Path) -> None:
    """The TVM headers the kernels and driver include, so src/ compiles on its own."""
    import importlib.util

    for package, header in TVM_HEADERS:
        root = Path(next(iter(importlib.util.find_spec(package).submodule_search_locations)))
        found = next((p for p in (root / "include" / header, root / "3rdparty" / "dlpack" / "include" / header)
                      if p.is_file()), None)
        if found is None:
            raise BuildError(f"the installed {package} package has no {header}; reinstall it with ./bootstrap.sh.")
        (include_dir / header).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found, include_dir / header)


# ---------- C sources ----------


def _c_string(text: str) -> str:
    """The body of a C string literal spelling `text` (UTF-8; anything unusual as octal escapes)."""
    return "".join(chr(b) if 32 <= b < 127 and b not in b'"\\?' else f"\\{b:03o}" for b in text.encode())


def _io_tensors(tensors: list[TensorInfo]) -> tuple[list[dict], int]:
    """What the header says of each input (or output), packed back to back at aligned offsets."""
    taken: set[str] = set()
    described, offset = [], 0
    for tensor in tensors:
        if tensor.dtype not in _DL_TYPES:
            raise BadInput(f"backend tvm cannot pass tensor '{tensor.name}' of dtype {tensor.dtype} "
                           f"(supported: {', '.join(_DL_TYPES)}).")
        size = _bytes(tuple(tensor.shape), tensor.dtype)
        described.append({
            "c_name": _c_string(tensor.name),
            "macro": c_identifier(tensor.name.upper(), taken),
            "offset": offset,
            "bytes": size,
            "shape": list(tensor.shape),
            "elements": math.prod(tensor.shape),
            "dtype": tensor.dtype,
            "quant": None if not tensor.is_quantized else {"scale": repr(float(tensor.quant[0])),
                                                            "zero_point": int(tensor.quant[1])},
        })  # fmt: skip
        offset += _aligned(size)
    return described, max(offset, ALIGNMENT)


def _render_sources(src: Path, name: str, model: ModelInfo, target: Target, route: str, plan: _Plan,
                    arena_bytes: int, arena_max_live: int) -> dict:
    inputs, input_bytes = _io_tensors(model.inputs)
    outputs, output_bytes = _io_tensors(model.outputs)
    blob = f"{name}_weights.bin"
    (src / blob).write_bytes(b"".join(w.data for w in plan.weights))
    weights = [{"symbol": w.symbol, "bytes": len(w.data), "offset": w.offset} for w in plan.weights]
    common = {"name": name, "NAME": name.upper(), "model_file": model.path.name, "target": target.name,
              "route": route, "route_label": ROUTES[route], "alignment": ALIGNMENT}
    context = {
        **common, "inputs": inputs, "outputs": outputs, "input_bytes": input_bytes, "output_bytes": output_bytes,
        "weights_bytes": sum(w["bytes"] for w in weights),
        "activations_bytes": sum(s["bytes"] for s in plan.storages),
        "arena_bytes": arena_bytes,
    }
    render("micro_model.h.j2", src / f"{name}.h", **context)
    tensors = [{"shape": list(t.shape), "dl_code": _DL_TYPES[t.dtype][0], "bits": _DL_TYPES[t.dtype][1],
                "buffer": t.buffer, "offset": t.offset} for t in plan.tensors]
    render("micro_model.c.j2", src / f"{name}.c", **common,
           kernels=sorted({call["kernel"] for call in plan.calls}), constants=weights, storages=plan.storages,
           tensors=tensors, calls=plan.calls, arena_max_live=arena_max_live,
           input_tensors=[{"index": i, "io_index": t.input} for i, t in enumerate(plan.tensors) if t.input is not None],
           output_tensors=[{"index": i, "io_index": t.output} for i, t in enumerate(plan.tensors)
                           if t.output is not None],
           output_copies=plan.output_copies)
    render("micro_weights.S.j2", src / f"{name}_weights.S", **common, constants=weights, blob=blob)
    render("micro_harness.c.j2", src / "harness.c", **common, inputs=inputs, outputs=outputs)
    return context


# ---------- compiling and linking ----------


def _tick_nanoseconds(target: Target, emulated: bool) -> Fraction:
    """Nanoseconds per SysTick tick at the board's clock: on the board a tick is a cycle; under
    qemu -icount shift=0 it is 1e9 / systick_hz instructions, each counted as one cycle (an estimate)."""
    per_cycle = Fraction(1000, target.clock_mhz)
    return per_cycle * Fraction(10**9, target.emulator["systick_hz"]) if emulated else per_cycle


def _compile_objects(work: Path, src: Path, name: str, route: str, target: Target, gcc: Path) -> dict:
    """Object files: "common" (firmware support, driver, kernels, weights) and one harness per image."""
    flags = [*target.firmware["cflags"], *CFLAGS, f"-I{FIRMWARE_DIR}", f"-I{src}", f"-I{src / 'include'}"]

    def compile_c(source: Path, obj: str, extra: tuple[str, ...] = ()) -> Path:
        cross.run_tool([gcc, *flags, *extra, "-c", source, "-o", obj], cwd=work)
        return work / obj

    common = [compile_c(FIRMWARE_DIR / source, source.replace(".c", ".o")) for source in FIRMWARE_SOURCES]
    common.append(compile_c(src / f"{name}.c", "driver.o"))
    kernels = src / f"{name}_kernels.{_suffix(route)}"
    common.append(compile_c(kernels, "kernels.o") if route == "c" else kernels)
    cross.run_tool([gcc, *target.firmware["cflags"], "-c", f"{name}_weights.S", "-o", work / "weights.o"], cwd=src)
    common.append(work / "weights.o")
    objects = {"common": common}
    for image, emulated in (("board", False), ("emulator", True)):
        if emulated and not target.emulator:
            continue
        tick = _tick_nanoseconds(target, emulated)
        objects[f"harness_{image}"] = compile_c(src / "harness.c", f"harness_{image}.o",
                                                (f"-DTICK_NS_NUM={tick.numerator}ULL",
                                                 f"-DTICK_NS_DEN={tick.denominator}ULL"))
    return objects


def _link(objects: list[Path], target: Target, linker_script: str, gcc: Path, out: Path, work: Path,
          extra: tuple[str, ...] = ()) -> None:
    cross.run_tool([
        gcc, *target.firmware["cflags"], "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
        f"-L{LINKER_SCRIPTS_DIR}", "-T", linker_script,
        f"-Wl,--defsym=__stack_size={target.firmware['stack_bytes']}", *extra,
        "-o", out, *objects, "-lm", "-lc", "-lgcc",
    ], cwd=work)  # fmt: skip


def _link_board_image(objects: dict, target: Target, gcc: Path, out: Path, work: Path) -> None:
    """Link for the board's memory map. When the image overflows it, link it anyway (for measuring:
    the caller then names what does not fit) instead of failing on the linker's terse message."""
    board_objects = [*objects["common"], objects["harness_board"]]
    try:
        _link(board_objects, target, target.firmware["linker_script"], gcc, out, work)
    except BuildError as err:
        if "overflowed" not in str(err) and "will not fit in region" not in str(err):
            raise
        _link(board_objects, target, target.firmware["linker_script"], gcc, out, work, ("-Wl,--noinhibit-exec",))


# ---------- memory ----------

_SHT_SYMTAB, _SHT_NOBITS = 2, 8
_SHF_WRITE, _SHF_ALLOC = 0x1, 0x2


def _elf_layout(path: Path) -> tuple[list[dict], list[dict]]:
    """Sections {"name", "bytes", "flash", "ram"} and sized symbols {"symbol", "bytes", "section"} of
    a 32-bit little-endian ELF image. Flash holds what is loaded; RAM what is writable."""
    data = path.read_bytes()
    section_offset = struct.unpack_from("<I", data, 0x20)[0]
    entry_size, count, names_index = struct.unpack_from("<HHH", data, 0x2E)
    headers = [struct.unpack_from("<10I", data, section_offset + i * entry_size) for i in range(count)]

    def string(table: int, offset: int) -> str:
        start = headers[table][4] + offset
        return data[start:data.index(b"\0", start)].decode()

    sections = []
    for name_offset, kind, flags, _, _, size, *_ in headers:
        allocated = bool(flags & _SHF_ALLOC)
        sections.append({"name": string(names_index, name_offset), "bytes": size,
                         "flash": allocated and kind != _SHT_NOBITS, "ram": allocated and bool(flags & _SHF_WRITE)})
    symbols = []
    for header in headers:
        if header[1] != _SHT_SYMTAB:
            continue
        offset, size, strings = header[4], header[5], header[6]
        for start in range(offset, offset + size, 16):
            name_offset, _, symbol_size, _, _, section = struct.unpack_from("<IIIBBH", data, start)
            if symbol_size and 0 < section < count and (sections[section]["flash"] or sections[section]["ram"]):
                symbols.append({"symbol": string(strings, name_offset), "bytes": symbol_size,
                                "section": sections[section]["name"]})
    return sections, symbols


def _memory(image: Path, target: Target, context: dict) -> dict:
    """report.json's memory section, measured on the board image."""
    sections, symbols = _elf_layout(image)
    in_region = {section["name"]: section for section in sections}
    stack = target.firmware["stack_bytes"]
    symbols.append({"symbol": "stack budget", "bytes": stack, "section": ".stack"})
    memory = {
        "flash_bytes": sum(s["bytes"] for s in sections if s["flash"]),
        "ram_bytes": sum(s["bytes"] for s in sections if s["ram"]),
        "flash_capacity_bytes": target.memory["flash_bytes"],
        "ram_capacity_bytes": target.memory["ram_bytes"],
        "weights_bytes": context["weights_bytes"],
        "activations_bytes": context["activations_bytes"],
        "arena_bytes": context["arena_bytes"],
        "stack_bytes": stack,
        "io_bytes": context["input_bytes"] + context["output_bytes"],
        "sections": {s["name"]: s["bytes"] for s in sections if s["flash"] or s["ram"]},
    }
    for region in ("flash", "ram"):
        consumers = [s for s in symbols if in_region[s["section"]][region]]
        memory[f"largest_{region}"] = sorted(consumers, key=lambda s: -s["bytes"])[:LARGEST_SHOWN]
    return memory


def _check_fits(memory: dict, model: ModelInfo, target: Target) -> None:
    over = [(region, memory[f"{region}_bytes"], memory[f"{region}_capacity_bytes"]) for region in ("flash", "ram")
            if memory[f"{region}_bytes"] > memory[f"{region}_capacity_bytes"]]
    if not over:
        return
    needs = " and ".join(f"{used:,} bytes of {region.replace('ram', 'RAM')} ({capacity:,} available)"
                         for region, used, capacity in over)
    biggest = ", ".join(f"{c['symbol']} ({c['bytes']:,} bytes, {c['section']})"
                        for region, _, _ in over for c in memory[f"largest_{region}"][:NAMED_IN_ERROR])
    raise BuildError(f"{model.path.name} does not fit {target.name}: the firmware needs {needs}; "
                     f"the biggest consumers are {biggest}.")
