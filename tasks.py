"""edgeyard's command line: thin Invoke tasks, each calling one toolchain function.

Heavy libraries (TensorFlow, TVM) are imported inside toolchain functions, never here, so
`invoke --list`, `invoke targets` and a cached build start in about the time Python takes.
"""

import sys

from invoke import Exit, task

from toolchain import console

HELP = {
    "target": "target profile name (see `invoke targets`)",
    "model": "model file: .keras/.h5, SavedModel folder, .tflite or .onnx (default: the embedded digits CNN)",
    "backend": "tvm, litert or onnxruntime (default: the target's default backend); bench: all compares them",
    "out": "output folder (default: build/<target>/<model-stem>/<backend>/)",
    "input_shape": "pin an input's shape, NAME:1x49x10x1 (repeatable)",
    "data": ".npz with x/y (or x_test/y_test) for validation inputs and accuracy",
    "samples": "validation samples (default 32)",
    "threads": "inference threads on the target (default 1)",
    "debug": "show the traceback of an error",
}


def _finish(action, debug: bool):
    result, code, message = console.guarded(action, debug)
    if code:
        raise Exit(message, code=code)
    return result


def _options(target, model, backend, out, input_shape, data, samples, threads):
    from pathlib import Path

    from toolchain.build import BuildOptions

    return BuildOptions(target=target, model=Path(model) if model else None, backend=backend,
                        out=Path(out) if out else None, input_shapes=console.parse_input_shapes(input_shape or []),
                        data=Path(data) if data else None, samples=samples, threads=threads)


@task(help=HELP, iterable=["input_shape"])
def build(c, target="rpi4", model=None, backend=None, out=None, input_shape=None, data=None, samples=32, threads=1,
          debug=False):
    """Build, run, validate and time a model for a target; writes report.json and report.md."""
    from toolchain.build import build as run_build

    result = _finish(lambda: run_build(_options(target, model, backend, out, input_shape, data, samples, threads),
                                       console.Progress()), debug)
    from toolchain import report

    print(("cached: nothing to do\n" if result.cached else "") + report.summary(result.report))


@task(help={**HELP, "runs": "timed runs (default 100)", "warmup": "untimed runs first (default 10)"},
      iterable=["input_shape"])
def bench(c, target="rpi4", model=None, backend=None, out=None, input_shape=None, data=None, samples=32, threads=1,
          runs=100, warmup=10, debug=False):
    """Build if needed, then time inference (median, p90) and update report.json; --backend all compares."""
    from toolchain import report
    from toolchain.build import compare_backends, run_bench

    options = lambda: _options(target, model, None if backend == "all" else backend, out, input_shape, data,  # noqa: E731
                               samples, threads)
    if backend == "all":
        comparison = _finish(lambda: compare_backends(options(), runs, warmup, progress=console.Progress()), debug)
        print(report.comparison_summary(comparison))
        return
    result = _finish(lambda: run_bench(options(), runs, warmup, console.Progress()), debug)
    print(report.summary(result.report))


@task(help={"model": HELP["model"], "input_shape": HELP["input_shape"], "debug": HELP["debug"]},
      iterable=["input_shape"])
def inspect(c, model, input_shape=None, debug=False):
    """Print a model's inputs/outputs, op histogram, parameters and MACs."""
    from pathlib import Path

    from toolchain.model import load_model
    from toolchain.model.summary import describe

    print(_finish(lambda: describe(load_model(Path(model), console.parse_input_shapes(input_shape or []) or None)),
                  debug))


@task(help={"debug": HELP["debug"]})
def targets(c, debug=False):
    """List the target profiles."""
    from toolchain.targets import target_table

    print(_finish(target_table, debug))


@task(help={"slow": "also run the slow end-to-end tests", "k": "only tests matching this expression",
            "x": "stop at the first failure"})
def test(c, slow=False, k=None, x=False):
    """Run the test suite (pytest)."""
    import subprocess

    argv = [sys.executable, "-m", "pytest"] + ([] if slow else ["-m", "not slow"])
    argv += (["-k", k] if k else []) + (["-x"] if x else [])
    code = subprocess.run(argv).returncode
    if code:
        raise Exit(code=code)


@task(help={"target": HELP["target"], "model": HELP["model"], "backend": HELP["backend"], "out": HELP["out"],
            "probe": "pyocd, openocd or st-flash (default: the target's)", "dry_run": "print the commands only",
            "debug": HELP["debug"]})
def flash(c, target="nucleo-l4r5zi", model=None, backend="tvm", out=None, probe=None, dry_run=False, debug=False):
    """Write a build's firmware to the board with a debug probe (after checking it against the manifest)."""
    import shlex
    from pathlib import Path

    from toolchain.flashers import flash as write_firmware
    from toolchain.paths import build_dir_for

    out_dir = build_dir_for(target, model, backend, out)
    print("\n".join(shlex.join(argv) for argv in _finish(lambda: write_firmware(target, out_dir, probe, dry_run),
                                                         debug)))
