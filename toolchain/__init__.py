"""edgeyard: take a trained model to an embedded target.

The package is the engine; tasks.py is a thin Invoke face over it. Importing it has no side effects
and stays cheap: TensorFlow and TVM are imported inside the functions that need them, and the public
API below is loaded on first use.

    from toolchain import BuildOptions, build
    result = build(BuildOptions(target="rpi4"))   # result.report is report.json's content
"""

import importlib

__version__ = "0.1.0"

# name -> module that defines it: the public API, imported when first used.
_API = {
    "BuildOptions": "toolchain.options",
    "build": "toolchain.pipeline.build",
    "run_bench": "toolchain.pipeline.bench",
    "compare_backends": "toolchain.pipeline.bench",
    "deploy": "toolchain.boards.deploy",
    "flash": "toolchain.boards.flashers",
    "load_model": "toolchain.model",
    "run_coverage": "toolchain.pipeline.coverage",
    "synthesize": "toolchain.pipeline.fpga_synthesis",
    "prune": "toolchain.compress.prune",
    "distill": "toolchain.compress.distill",
    "EdgeyardError": "toolchain.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'toolchain' has no attribute '{name}'")
    return vars(importlib.import_module(_API[name]))[name]
