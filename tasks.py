"""edgeyard's command line: thin Invoke tasks, each calling one toolchain function.

Heavy libraries (TensorFlow, TVM) are imported inside toolchain functions, never here, so
`invoke --list`, `invoke targets` and a cached build start in about the time Python takes.
"""

import sys

from invoke import Exit, task

from toolchain import console, options

console.quiet_frameworks()

HELP = {
    "target": "target profile name (see `invoke targets`)",
    "model": "model file: .keras/.h5, SavedModel folder, .tflite or .onnx (default: the embedded digits CNN)",
    "backend": "tvm, litert or onnxruntime (default: the target's default backend); auto: the first of the target's "
               "backends that builds and validates, recording why the others did not; bench: all compares them",
    "out": "output folder (default: build/<target>/<model-stem>/<backend>/)",
    "input_shape": "pin an input's shape, NAME:1x49x10x1 (repeatable)",
    "data": ".npz with x/y (or x_test/y_test) for validation inputs and accuracy",
    "samples": "validation samples (default 32)",
    "threads": "inference threads on the target (default 1)",
    "quantize": "none (default), fp16, dynamic (int8 weights) or int8 (full integer, calibrated)",
    "quantize_io": "--quantize int8: int8 (default for TFLite) or float (ONNX: always float) inputs and outputs",
    "calibration": "--quantize int8 calibration inputs: .npz (x_train, x or x_test), .npy or a folder of them "
                   "(default: --data, or the default model's training split)",
    "eval_data": "labelled .npz (x/y or x_test/y_test) for the float and quantized accuracy "
                 "(default: --data's or the default model's test split)",
    "precision": "FPGA fixed-point type of every layer, e.g. ap_fixed<16,6> (default: the target's)",
    "layer_precision": "one layer's FPGA fixed-point type, NAME=ap_fixed<24,10> (repeatable)",
    "set": "change a target setting for this build, KEY=VALUE, e.g. ethos_u.accelerator_config=ethos-u55-256 (repeatable)",
    "debug": "show the traceback of an error",
}
QUANTIZE_OPTIONS = ("quantize", "quantize_io", "calibration", "eval_data")  # build and bench only
# How `bench` and `deploy` reach a real board.
BOARD_HELP = {
    "host": "run on a Linux board over SSH: [USER@]ADDRESS",
    "port": "SSH port (default: ssh's own, 22 or ~/.ssh/config)",
    "identity": "SSH private key file (default: ssh's own keys and agent)",
    "known_hosts": "known_hosts file holding the board's host key (default: ~/.ssh/known_hosts)",
    "rpc": "run on a TVM RPC device farm: the tracker's HOST:PORT (tvm backend)",
    "key": "the board's key at the TVM RPC tracker",
}


def _finish(action, debug: bool):
    result, code, message = console.guarded(action, debug)
    if code:
        raise Exit(message, code=code)
    return result


@task(help=HELP, iterable=["input_shape", "layer_precision", "set"])
def build(c, target="rpi4", model=None, backend=None, out=None, input_shape=None, data=None, samples=32, threads=1,
          quantize=None, quantize_io=None, calibration=None, eval_data=None, precision=None, layer_precision=None,
          set=None, debug=False):
    """Build, run, validate and time a model for a target; writes report.json and report.md."""
    from toolchain.pipeline.build import build as run_build

    opts = lambda: options.build_options(target, model, backend, out, input_shape, data, samples, threads,  # noqa: E731
                               quantize, precision, layer_precision, set, quantize_io, calibration, eval_data)
    result = _finish(lambda: run_build(opts(), console.ProgressPrinter()), debug)
    from toolchain.pipeline import report

    print(("cached: nothing to do\n" if result.cached else "") + report.summary(result.report))


@task(help={**HELP, **BOARD_HELP, "runs": "timed runs (default 100)", "warmup": "untimed runs first (default 10)"},
      iterable=["input_shape", "layer_precision", "set"])
def bench(c, target="rpi4", model=None, backend=None, out=None, input_shape=None, data=None, samples=32, threads=1,
          runs=100, warmup=10, quantize=None, precision=None, layer_precision=None, set=None, host=None, port=0,
          identity=None, known_hosts=None, rpc=None, key=None, quantize_io=None, calibration=None, eval_data=None,
          debug=False):
    """Build if needed, then time inference (median, p90) and update report.json; --backend all compares."""
    from toolchain.pipeline import report
    from toolchain.pipeline.bench import compare_backends, run_bench

    opts = lambda: options.build_options(target, model, None if backend == "all" else backend, out, input_shape, data,  # noqa: E731
                               samples, threads, quantize, precision, layer_precision, set, quantize_io, calibration,
                               eval_data)
    board = lambda: options.board_connection(host, port, identity, known_hosts, rpc, key)  # noqa: E731
    if backend == "all":
        comparison = _finish(lambda: compare_backends(opts(), runs, warmup, progress=console.ProgressPrinter(),
                                                      connection=board()), debug)
        print(report.comparison_summary(comparison))
        return
    result = _finish(lambda: run_bench(opts(), runs, warmup, console.ProgressPrinter(), board()), debug)
    print(report.summary(result.report))


@task(help={**{k: v for k, v in HELP.items() if k not in QUANTIZE_OPTIONS + ("precision", "layer_precision", "set")},
            **{k: BOARD_HELP[k] for k in ("port", "identity", "known_hosts")},
            "host": "the Linux board, [USER@]ADDRESS (required)"},
      iterable=["input_shape"])
def deploy(c, target="rpi4", model=None, backend=None, out=None, input_shape=None, data=None, samples=32, threads=1,
           host=None, port=0, identity=None, known_hosts=None, debug=False):
    """Build if needed, check the bundle against its manifest's sha256 and copy it to a board over SSH."""
    from toolchain.boards import deploy as deployment
    from toolchain.pipeline.build import build as run_build

    def action():
        if not host:
            from toolchain.errors import BadInput

            raise BadInput("deploy needs --host [USER@]ADDRESS.")
        built = run_build(options.build_options(target, model, backend, out, input_shape, data, samples, threads),
                          console.ProgressPrinter())
        return deployment.deploy(built.out_dir, host, port or None, identity, known_hosts,
                                 progress=console.ProgressPrinter())

    done = _finish(action, debug)
    state = "copied" if done.copied else "already there, nothing copied"
    print(f"{done.host}:{done.remote_dir} ({done.files} files, {done.bytes / 1e6:.2f} MB, {state}); "
          f"run it there with: cd {done.remote_dir} && ./run.sh IN_DIR OUT_DIR SAMPLES WARMUP REPEAT")


@task(help={**{k: v for k, v in HELP.items() if k not in ("backend", "threads") + QUANTIZE_OPTIONS},
            "logic": "also run Vivado logic synthesis after C synthesis (slower; post-synthesis resources)"},
      iterable=["input_shape", "layer_precision", "set"])
def fpga_synth(c, target="alveo-u250", model=None, out=None, input_shape=None, data=None, samples=32, precision=None,
               layer_precision=None, set=None, logic=False, debug=False):
    """Build with hls4ml if needed, then synthesize with AMD Vitis HLS (exits 3 when it is not installed)."""
    from toolchain.pipeline import report
    from toolchain.pipeline.fpga_synthesis import synthesize

    opts = lambda: options.build_options(target, model, "hls4ml", out, input_shape, data, samples, 1, None,  # noqa: E731
                               precision, layer_precision, set)
    result = _finish(lambda: synthesize(opts(), logic, console.ProgressPrinter()), debug)
    print(report.summary(result.report))


@task(help={"model": HELP["model"], "input_shape": HELP["input_shape"], "debug": HELP["debug"]},
      iterable=["input_shape"])
def inspect(c, model, input_shape=None, debug=False):
    """Print a model's inputs/outputs, op histogram, parameters and MACs."""
    from pathlib import Path

    from toolchain.model import load_model
    from toolchain.model.summary import describe

    print(_finish(lambda: describe(load_model(Path(model), options.parse_input_shapes(input_shape or []) or None)),
                  debug))


@task(help={"debug": HELP["debug"]})
def targets(c, debug=False):
    """List the target profiles."""
    from toolchain.target.profile import target_table

    print(_finish(target_table, debug))


SCALE_HELP = {
    "jobs": "builds at once on this machine, in separate processes (default: its cores)",
    "scheduler": "run the builds as tasks on a Dask cluster instead: its scheduler, tcp://HOST:PORT "
                 "(workers declare --resources qemu=1 / cuda=1 for the targets that need them)",
}
MATRIX_HELP = {
    "models": "folder of models: .keras/.h5, .tflite and .onnx files, SavedModel folders (others are skipped)",
    "targets": "comma-separated target profiles (default: host)",
    "samples": HELP["samples"], "debug": HELP["debug"],
}


def _exit_if_failed(result: dict) -> None:
    if result["failed"]:
        raise Exit(f"error: {result['failed']} of {result['builds']} builds failed; "
                   f"see {result['out_dir']}/coverage.md", code=1)


@task(help={**MATRIX_HELP, **SCALE_HELP, "backend": "auto (default) or one backend for every build",
            "out": "folder for the builds and coverage.json/.md (default: build/coverage/)"})
def coverage(c, models, targets="host", backend="auto", out=None, samples=32, jobs=0, scheduler=None, debug=False):
    """Build every model in a folder for every target; print the matrix, write coverage.json and coverage.md."""
    from pathlib import Path

    from toolchain.pipeline.coverage import matrix_text, run_coverage

    result = _finish(lambda: run_coverage(Path(models), options.parse_names(targets), backend,
                                          Path(out) if out else None, samples, console.ProgressPrinter(),
                                          options.scheduler_address(scheduler), jobs or None), debug)
    print(matrix_text(result))
    _exit_if_failed(result)


@task(help={**MATRIX_HELP, **SCALE_HELP,
            "models": MATRIX_HELP["models"] + " (default: the embedded default model)",
            "plan": "print the matrix as JSON for GitHub Actions' fromJSON: shards, each with its entries "
                    "(model, target, backend)",
            "shards": "--plan: how many shards (default 1)",
            "shard": "build the i-th of N shares of the plan, i/N (the same --models/--targets/--backends as the plan)",
            "merge": "merge shard folders (or a folder of them) into one coverage table (repeatable)",
            "backends": "comma-separated backends, or auto (default): each target's first that validates",
            "out": "--shard: folder for its builds and matrix-shard.json; --merge: for coverage.json/.md "
                   "(default: build/matrix/)",
            "baseline": "--merge: an earlier merged coverage.json to compare flash and RAM with",
            "max_growth": "--merge --baseline: growth a cell's flash or RAM may show, e.g. 5% (default) or 0.05"},
      iterable=["merge"])
def matrix(c, plan=False, shards=1, shard=None, merge=None, models=None, targets="host", backends="auto", out=None,
           samples=32, jobs=0, scheduler=None, baseline=None, max_growth="5%", debug=False):
    """The coverage matrix for CI: --plan (JSON), --shard i/N (build a share), --merge DIR (one table)."""
    import json
    from pathlib import Path

    from toolchain.pipeline import matrix as engine
    from toolchain.pipeline.coverage import matrix_text, plan as plan_entries

    if [bool(plan), bool(shard), bool(merge)].count(True) != 1:
        raise Exit("error: give exactly one of --plan, --shard i/N and --merge DIR.", code=2)
    models_dir = Path(models) if models else None
    if plan:
        entries = _finish(lambda: plan_entries(models_dir, options.parse_names(targets),
                                               options.parse_names(backends)), debug)
        print(json.dumps(_finish(lambda: engine.plan_json(entries, shards), debug)))
        return
    if shard:
        result = _finish(lambda: engine.run_shard(
            models_dir, options.parse_names(targets), options.parse_names(backends), options.parse_shard(shard),
            Path(out) if out else None, samples, options.scheduler_address(scheduler), jobs or None,
            console.ProgressPrinter()), debug)
    else:
        result = _finish(lambda: engine.merge([Path(folder) for folder in merge], Path(out) if out else None,
                                              Path(baseline) if baseline else None,
                                              options.parse_growth(max_growth)), debug)
    print(matrix_text(result))
    check = result.get("size_check")
    if check:
        print(engine.size_check_text(check))
    _exit_if_failed(result)
    if check and check["regressions"]:
        raise Exit(f"error: {check['regressions']} flash/RAM figures grew by more than "
                   f"{check['max_growth']:.1%} against {check['baseline']}; see {result['out_dir']}/coverage.md",
                   code=1)


@task(help={"fast": "only the fast unit tests (no TensorFlow, TVM or compiler; seconds)",
            "slow": "also run the slow end-to-end tests", "k": "only tests matching this expression",
            "x": "stop at the first failure"})
def test(c, fast=False, slow=False, k=None, x=False):
    """Run the test suite (pytest): by default all but the slow tests; --fast: the unit tests; --slow: all."""
    from toolchain import proc

    if fast and slow:
        raise Exit("error: give --fast or --slow, not both.", code=2)
    argv = [sys.executable, "-m", "pytest"] + (["-m", "fast"] if fast else [] if slow else ["-m", "not slow"])
    argv += (["-k", k] if k else []) + (["-x"] if x else [])
    code = proc.run(argv, check=False, capture=False).returncode  # pytest prints to this terminal
    if code:
        raise Exit(code=code)


@task(help={"target": HELP["target"], "model": HELP["model"], "backend": HELP["backend"], "out": HELP["out"],
            "probe": "pyocd, openocd or st-flash (default: the target's)", "dry_run": "print the commands only",
            "debug": HELP["debug"]})
def flash(c, target="nucleo-l4r5zi", model=None, backend="tvm", out=None, probe=None, dry_run=False, debug=False):
    """Write a build's firmware to the board with a debug probe (after checking it against the manifest)."""
    import shlex

    from toolchain.boards.flashers import flash as write_firmware
    from toolchain.paths import build_dir_for

    out_dir = build_dir_for(target, model, backend, out)
    print("\n".join(shlex.join(argv) for argv in _finish(lambda: write_firmware(target, out_dir, probe, dry_run),
                                                         debug)))


COMPRESS_HELP = {
    "data": ".npz with x_train, y_train, x_test, y_test (the default model comes with its digits)",
    "epochs": "training epochs on --data's training split",
    "out": "the smaller model's .keras file (default: build/compress/<model-stem>_<what>.keras); "
           "its report goes beside it as .json and .md",
    "debug": HELP["debug"],
}


@task(help={**COMPRESS_HELP, "model": "Keras model .keras/.h5 (default: the embedded digits CNN)",
            "sparsity": "fraction to remove, 0 < S < 1: of each hidden layer's channels (--structured) or of each "
                        "kernel's weights (default 0.5)",
            "structured": "remove whole channels (smaller, faster model) instead of zeroing single weights",
            "epochs": "fine-tuning epochs on --data's training split (default 10; 0: no fine-tuning, no --data "
                      "needed)"})
def prune(c, model=None, sparsity=0.5, structured=False, data=None, epochs=10, out=None, debug=False):
    """Prune a Keras model (channels or weights), fine-tune it, write it with a report of its size and accuracy."""
    from pathlib import Path

    from toolchain.compress.common import summary
    from toolchain.compress.prune import prune as run_prune

    result = _finish(lambda: run_prune(Path(model) if model else None, sparsity, structured,
                                       Path(data) if data else None, epochs, Path(out) if out else None,
                                       console.ProgressPrinter()), debug)
    print(summary(result.report))


@task(help={**COMPRESS_HELP, "teacher": "Keras teacher .keras/.h5 (default: the embedded digits CNN)",
            "student": "width=X: the teacher's architecture with every hidden layer's channels times X (fresh "
                       "weights), or a .keras file with the student's architecture (default width=0.5)",
            "temperature": "softening temperature T of both models' logits (default 4)",
            "alpha": "weight of the labels' loss; 1 - alpha weighs the teacher's (default 0.1)",
            "epochs": "training epochs on --data's training split (default 60)"})
def distill(c, teacher=None, student="width=0.5", data=None, temperature=4.0, alpha=0.1, epochs=60, out=None,
            debug=False):
    """Train a smaller student on a teacher's softened outputs; write it with a report comparing both."""
    from pathlib import Path

    from toolchain.compress.common import summary
    from toolchain.compress.distill import distill as run_distill

    result = _finish(lambda: run_distill(Path(teacher) if teacher else None, student, Path(data) if data else None,
                                         temperature, alpha, epochs, Path(out) if out else None, console.ProgressPrinter()),
                     debug)
    print(summary(result.report))
