"""The tvm backend for microcontrollers (targets with os "none"): TVM's kernels behind the static C
driver (static_driver.py), linked into harness firmware for the board and its emulator
(backends/_firmware.py). This module registers nothing: tvm/__init__.py dispatches here."""

from functools import partial

from .._firmware import ModelSources, build_firmware, find_tools
from ..base import CompileRequest, CompileResult
from .static_driver import compile_model_objects, generate_sources


def compile_for_microcontroller(request: CompileRequest) -> CompileResult:
    tools = find_tools(request.target)
    static_model = generate_sources(request, "firmware_harness.c.j2")
    sources = ModelSources(static_model.name, static_model.src, static_model.context,
                           partial(compile_model_objects, static_model), {"kernels": static_model.route},
                           {"tvm_target": request.target.tvm_target})
    return build_firmware(request, "tvm", sources, tools)
