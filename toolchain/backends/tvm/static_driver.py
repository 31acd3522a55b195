"""The tvm backend without a TVM runtime: TVM's kernels and a static C driver, shared by the
microcontroller firmware (firmware.py) and Linux boards whose target says tvm_runtime = "none"
(static_linux.py).

Relax's "zero" pipeline fuses the model into TIR kernels, built either as an LLVM object for the
core (the target file's llvm tvm_target, the default: 1.6-2.6x fewer instructions on the MLPerf
Tiny models) or as C (tvm_target {kind = "c"}, compiled by the target's gcc). Int8 layers keep
int8 weights and activations (the int8 import computes on them: int8_import.py), and each
kernel's steps are fused loop by loop so it needs almost no scratch memory. Lowering main with StaticPlanBlockMemory gives the activation buffers and the
kernel calls in order; templates/static_model.c.j2 turns them into a driver where every buffer,
tensor and argument list is static: no malloc, no TVM runtime. The kernels' scratch memory comes
from a static arena sized from the lowered kernels.

What generate_sources() writes into the bundle's src/: <name>.h (the API), <name>.c (driver),
<name>_kernels.c or .o, <name>_weights.S and .bin, harness.c (from the caller's template) and the
TVM headers they include. tvm is imported inside functions.
"""

import importlib
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ...codegen import c_identifier, render
from ...errors import BadInput, BuildError, reason
from ...hostenv import cross
from ...model.info import ModelInfo
from ...target.profile import Target
from .._static_model import io_tensors, model_identifier
from ..base import CompileRequest
from .frontend import DL_TYPES, imported_module, static_signature, tvm_target_of

SOURCES = "src"

# TVM's kernels assume 64-byte aligned tensors (its kAllocAlignment; the LLVM code carries the
# assumption as llvm.assume), so every buffer, weight, input and output is aligned so.
ALIGNMENT = 64
ROUTES = {"llvm": "LLVM object kernels", "c": "C kernels"}
# Headers the kernels and the driver include, as (package, path inside its include folder).
TVM_HEADERS = (
    ("tvm_ffi", "tvm/ffi/c_api.h"),
    ("tvm_ffi", "tvm/ffi/extra/c_env_api.h"),
    ("tvm_ffi", "dlpack/dlpack.h"),
    ("tvm", "tvm/runtime/base.h"),
    ("tvm", "tvm/runtime/c_backend_api.h"),
)


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


@dataclass
class StaticModel:
    """The generated sources of a model in the bundle's src/ folder, and what templates said of it."""

    name: str  # the model's C identifier: <name>.h, <name>_run()
    route: str  # a key of ROUTES
    src: Path
    context: dict  # what the header was rendered with: tensors, sizes of weights, activations, arena

    @property
    def kernels(self) -> Path:
        return self.src / f"{self.name}_kernels.{'c' if self.route == 'c' else 'o'}"


def generate_sources(request: CompileRequest, harness_template: str) -> StaticModel:
    """Import, lower and plan the model; write the kernels, the driver, the weights and the harness
    (rendered from `harness_template`) into the bundle's src/."""
    model, target = request.model, request.target
    route = target.tvm_target.get("kind")
    if route not in ROUTES:
        raise BadInput(f"{target.path}: tvm_target kind '{route}' cannot make kernels for a static driver; "
                       f"use {' or '.join(repr(r) for r in ROUTES)}.")
    name = model_identifier(model.stem)
    ir_module = imported_module(model, request.progress)

    request.progress(f"planning static memory and building {ROUTES[route]} for {target.name}")
    kernels, main, kernel_symbols = _lower(ir_module, name, model)
    plan = _static_plan(main, model, name, kernel_symbols)
    src = request.bundle_dir.absolute() / SOURCES  # absolute: compile_model_objects runs gcc elsewhere
    src.mkdir()
    static_model = StaticModel(name, route, src, {})
    arena_bytes, arena_max_live = _build_kernels(kernels, target, route, static_model.kernels)
    _copy_tvm_headers(src / "include")
    static_model.context = _render_sources(src, name, model, target, route, plan, arena_bytes, arena_max_live,
                                           harness_template)
    return static_model


def compile_model_objects(static_model: StaticModel, work: Path, gcc: Path, cpu_flags: list[str]) -> list[Path]:
    """The driver, the kernels and the weights as object files in `work`, for the CPU `cpu_flags` name."""
    src = static_model.src
    flags = [*cpu_flags, *cross.c_flags(src, work), f"-I{src}", f"-I{src / 'include'}"]
    cross.run_tool([gcc, *flags, "-c", src / f"{static_model.name}.c", "-o", "driver.o"], cwd=work)
    kernels = static_model.kernels
    if static_model.route == "c":
        cross.run_tool([gcc, *flags, "-c", kernels, "-o", "kernels.o"], cwd=work)
        kernels = work / "kernels.o"
    # The weights' .incbin names the blob relative to src/.
    cross.run_tool([gcc, *cpu_flags, "-c", f"{static_model.name}_weights.S", "-o", work / "weights.o"], cwd=src)
    return [work / "driver.o", kernels, work / "weights.o"]


# ---------- Relax -> kernels and the static plan ----------


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
        raise BuildError(f"TVM could not compile {model.path.name}: {reason(err)}") from err
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
        shape, dtype = static_signature(var_type)
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
                    shape, dtype = static_signature(var.ty)
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
                what = value.op.name if isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op) else type(value).__name__
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
    return math.prod(shape) * DL_TYPES[dtype][1] // 8


def _build_kernels(kernels, target: Target, route: str, out_path: Path) -> tuple[int, int]:
    """Write the kernels (C source or object) to out_path; return the workspace arena they need
    (bytes, most allocations live at once), read from the lowered TIR."""
    import tvm
    import tvm_ffi

    tvm_target = tvm_target_of(target, {"kind": "c"} if route == "c" else None)
    alloc_workspace = tvm.ir.Op.get("tirx.TVMBackendAllocWorkspace")
    try:
        # tvm.tirx.build's steps, split so the lowered kernels can be read before code generation.
        with tvm.transform.PassContext(config={"tirx.disable_assert": True}):
            bound = tvm.tirx.transform.BindTarget(tvm_target.with_host(tvm_target))(kernels)
            passes, finalize_host_passes, _ = tvm.tirx.get_tir_pipeline("default")
            lowered = finalize_host_passes()(passes(bound))
            runtime_module = importlib.import_module("tvm.tirx.build").codegen_build(lowered, tvm_target)
    except Exception as err:
        raise BuildError(f"TVM could not build the kernels for {target.name}: {reason(err)}") from err
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


def _render_sources(src: Path, name: str, model: ModelInfo, target: Target, route: str, plan: _Plan,
                    arena_bytes: int, arena_max_live: int, harness_template: str) -> dict:
    inputs, input_bytes = io_tensors(model.inputs, ALIGNMENT)
    outputs, output_bytes = io_tensors(model.outputs, ALIGNMENT)
    blob = f"{name}_weights.bin"
    (src / blob).write_bytes(b"".join(w.data for w in plan.weights))
    weights = [{"symbol": w.symbol, "bytes": len(w.data), "offset": w.offset} for w in plan.weights]
    common = {"name": name, "NAME": name.upper(), "model_file": model.path.name, "target": target.name,
              "route": route, "route_label": ROUTES[route], "alignment": ALIGNMENT,
              "compiler": f"TVM ({ROUTES[route]})"}
    context = {
        **common, "inputs": inputs, "outputs": outputs, "input_bytes": input_bytes, "output_bytes": output_bytes,
        "weights_bytes": sum(w["bytes"] for w in weights),
        "activations_bytes": sum(s["bytes"] for s in plan.storages),
        "arena_bytes": arena_bytes,  # the kernels' workspace
        "working_bytes": sum(s["bytes"] for s in plan.storages) + arena_bytes,
    }
    render("static_model.h.j2", src / f"{name}.h", **context, layer_count=0)
    tensors = [{"shape": list(t.shape), "dl_code": DL_TYPES[t.dtype][0], "bits": DL_TYPES[t.dtype][1],
                "buffer": t.buffer, "offset": t.offset} for t in plan.tensors]
    render("static_model.c.j2", src / f"{name}.c", **common,
           kernels=sorted({call["kernel"] for call in plan.calls}), constants=weights, storages=plan.storages,
           tensors=tensors, calls=plan.calls, arena_max_live=arena_max_live,
           input_tensors=[{"index": i, "io_index": t.input} for i, t in enumerate(plan.tensors) if t.input is not None],
           output_tensors=[{"index": i, "io_index": t.output} for i, t in enumerate(plan.tensors)
                           if t.output is not None],
           output_copies=plan.output_copies)
    render("static_weights.S.j2", src / f"{name}_weights.S", **common, constants=weights, blob=blob)
    render(harness_template, src / "harness.c", **common, inputs=inputs, outputs=outputs)
    return context

