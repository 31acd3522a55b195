"""edgeyard's command line: thin Invoke tasks, each calling one toolchain function.

Heavy libraries (TensorFlow, TVM) are imported inside toolchain functions, never here, so
`invoke --list`, `invoke targets` and a cached build start in about the time Python takes.
"""

import sys

from invoke import Exit, task
from invoke.exceptions import ParseError
from invoke.program import Program

from toolchain import console, options

console.quiet_frameworks()


def _usage_errors_exit_2(parse):
    """Invoke's own parser errors (an unknown flag, `--samples abc`) exit 2 like edgeyard's other bad input
    (Invoke exits 1, or shows a traceback for a value its int() refuses); `TASK --help` where TASK takes a
    positional argument prints the task's help instead of reading "--help" as that argument."""
    def parse_then_check(program):
        try:
            parse(program)
        except (ParseError, ValueError) as err:
            raise Exit(f"error: {_refused_value(err) or console.one_line(str(err))} (see invoke --help TASK).",
                       code=2) from None
        for context in program.tasks or []:
            if any(arg.value in ("-h", "--help") for arg in context.positional_args):
                program.print_task_help(context.name)
                raise Exit(code=0)
    return parse_then_check


def _refused_value(err: Exception) -> str | None:
    """'--samples takes a whole number, not 'abc'' when Invoke's int() or float() refused an option's value: the
    option is the Argument whose set_value the error came from (Invoke's ValueError does not name it)."""
    from invoke.parser import Argument

    refused, frame = None, err.__traceback__
    while frame is not None:  # the innermost frame of Argument.set_value(self, value)
        argument = frame.tb_frame.f_locals.get("self")
        if isinstance(argument, Argument) and argument.kind in (int, float) and "value" in frame.tb_frame.f_locals:
            refused = argument, frame.tb_frame.f_locals["value"]
        frame = frame.tb_next
    if refused is None:
        return None
    argument, value = refused
    kind = "a whole number" if argument.kind is int else "a number"
    return f"--{max(argument.names, key=len).replace('_', '-')} takes {kind}, not {console.printable(str(value))!r}"


# Parsing the tasks' arguments happens after Invoke imports this file: the only place to change it.
Program.parse_tasks = _usage_errors_exit_2(Program.parse_tasks)

HELP = {
    "target": "target profile name (see `invoke targets`)",
    "model": "model file: .keras/.h5, SavedModel folder, .tflite or .onnx (default: the embedded digits CNN)",
    "backend": "one of the target's backends, e.g. tvm, litert, onnxruntime, kernels (default: the target's default); "
               "auto: every backend of the target built, validated and measured, the fastest shipped; "
               "bench: all compares them",
    "out": "output folder (default: build/<target>/<model-stem>/<backend>/)",
    "input_shape": "pin an input's shape, NAME:1x49x10x1 (repeatable)",
    "data": ".npz with x/y (or x_test/y_test) for validation inputs and accuracy",
    "samples": "validation samples (default 32)",
    "threads": "inference threads on the target (default 1)",
    "quantize": "none (default), fp16, dynamic (int8 weights), int8 (full integer, calibrated), int16x8 (16-bit "
                "activations, int8 weights; litert) or mixed (int8 but the most sensitive layers float, within "
                "--accuracy-budget)",
    "accuracy_budget": "--quantize mixed, --precision auto: accuracy drop allowed on the labelled data, in "
                       "percentage points (default 0.5)",
    "quantize_io": "--quantize int8: int8 (default for TFLite) or float (ONNX: always float) inputs and outputs",
    "calibration": "--quantize int8 calibration inputs: .npz (x_train, x or x_test), .npy or a folder of them "
                   "(default: --data, or the default model's training split)",
    "eval_data": "labelled .npz (x/y or x_test/y_test) for the float and quantized accuracy "
                 "(default: --data's or the default model's test split)",
    "precision": "FPGA fixed-point type of every layer, e.g. ap_fixed<16,6> (default: the target's), or auto: each "
                 "layer's chosen by measured accuracy within --accuracy-budget",
    "layer_precision": "one layer's FPGA fixed-point type, NAME=ap_fixed<24,10> (repeatable)",
    "set": "change a target setting for this build, KEY=VALUE, e.g. ethos_u.accelerator_config=ethos-u55-256 (repeatable)",
    "signing_key": "Ed25519 key that signs the build (default: $EDGEYARD_SIGNING_KEY, else the per-user key "
                   "from invoke keygen if it exists; without one the build is unsigned)",
    "encrypt": "32-byte AES-256 key file (invoke keygen --aes FILE): the bundle's model is stored AES-256-GCM "
               "encrypted and the board's runner decrypts it in memory with the key file $EDGEYARD_MODEL_KEY names "
               "(tvm, litert, onnxruntime on Linux boards; docs/trust.md)",
    "debug": "show the traceback of an error (and, like --verbose, the libraries' own log lines)",
}
VERBOSE = {"verbose": "show TensorFlow's, LiteRT's and ONNX Runtime's own log lines on the terminal (by default they "
                      "go to third-party.log in the build folder)"}
TUNING_HELP = {"tuning_db": "folder of TVM tuning databases, one per target (default: <cache>/tvm-tuning; "
                            "invoke tune fills it)"}
ALLOW_UNSIGNED = "accept a build without a signature (its files are still checked against its manifest)"
QUANTIZE_OPTIONS = ("quantize", "quantize_io", "calibration", "eval_data", "accuracy_budget")  # build and bench only
# How `bench` and `deploy` reach a real board.
BOARD_HELP = {
    "host": "run on a Linux board over SSH: [USER@]ADDRESS",
    "port": "SSH port (default: ssh's own, 22 or ~/.ssh/config)",
    "identity": "SSH private key file (default: ssh's own keys and agent)",
    "known_hosts": "known_hosts file holding the board's host key (default: ~/.ssh/known_hosts)",
    "rpc": "run on a TVM RPC device farm: the tracker's HOST:PORT (tvm backend)",
    "key": "the board's key at the TVM RPC tracker",
}


def _show(text: str) -> None:
    """Print a result for a human: names from models and files may hold escape sequences (console.printable)."""
    print(console.printable(text))


def _finish(action, debug: bool):
    result, code, message = console.guarded(action, debug)
    if code:
        raise Exit(message, code=code)
    return result


def _with_progress(action, debug: bool, verbose: bool, folder_of=lambda result: None):
    """_finish(action(progress)) with a progress printer, the libraries' own output in a log file (not the
    terminal) unless verbose or debug; the log moves into folder_of(result), the build folder, on success."""
    printer = console.ProgressPrinter()
    with console.framework_output(verbose or debug) as log:
        try:
            result = _finish(lambda: action(printer), debug)
        finally:
            printer.close()
        folder = folder_of(result)
        if folder is not None:
            log.keep(folder)
    return result


@task(help={**HELP, **VERBOSE, **TUNING_HELP, "check_reproducible": "build a second time in a scratch folder with a scratch cache "
                                                     "folder and name the files that differ (exit 1 when any do)"},
      iterable=["input_shape", "layer_precision", "set"])
def build(c, target="rpi4", model=None, backend=None, out=None, input_shape=None, data=None, samples=32, threads=1,
          quantize=None, quantize_io=None, calibration=None, eval_data=None, precision=None, layer_precision=None,
          set=None, signing_key=None, accuracy_budget=None, encrypt=None, tuning_db=None, check_reproducible=False,
          debug=False, verbose=False):
    """Build, run, validate and time a model for a target; writes report.json, report.md, report.html,
    provenance.json (and signature.json with a signing key)."""
    from toolchain.pipeline.build import build as run_build

    opts = lambda: options.build_options(target, model, backend, out, input_shape, data, samples, threads,  # noqa: E731
                               quantize, precision, layer_precision, set, quantize_io, calibration, eval_data,
                               signing_key, accuracy_budget, encrypt, tuning_db)
    if check_reproducible:
        from toolchain.pipeline.reproducibility import check_reproducible as check

        checked = _with_progress(lambda progress: check(opts(), progress), debug, verbose)
        _show(f"reproducible: {len(checked.compared)} files of {checked.first} byte-identical in a second build "
              "(another folder, another cache folder)")
        return
    result = _with_progress(lambda progress: run_build(opts(), progress), debug, verbose,
                            lambda built: None if built.cached else built.out_dir)
    from toolchain.pipeline import report

    _show(("cached: nothing to do\n" if result.cached else "") + report.summary(result.report))


@task(help={**HELP, **BOARD_HELP, **VERBOSE, **TUNING_HELP, "runs": "timed runs (default 100)", "warmup": "untimed runs first (default 10)"},
      iterable=["input_shape", "layer_precision", "set"])
def bench(c, target="rpi4", model=None, backend=None, out=None, input_shape=None, data=None, samples=32, threads=1,
          runs=100, warmup=10, quantize=None, precision=None, layer_precision=None, set=None, host=None, port=0,
          identity=None, known_hosts=None, rpc=None, key=None, quantize_io=None, calibration=None, eval_data=None,
          signing_key=None, accuracy_budget=None, encrypt=None, tuning_db=None, debug=False,
          verbose=False):
    """Build if needed, then time inference (median, p90) and update report.json; --backend all compares."""
    from toolchain.pipeline import report
    from toolchain.pipeline.bench import compare_backends, run_bench

    opts = lambda: options.build_options(target, model, None if backend == "all" else backend, out, input_shape, data,  # noqa: E731
                               samples, threads, quantize, precision, layer_precision, set, quantize_io, calibration,
                               eval_data, signing_key, accuracy_budget, encrypt, tuning_db)
    board = lambda: options.board_connection(host, port, identity, known_hosts, rpc, key)  # noqa: E731
    if backend == "all":
        comparison = _with_progress(lambda progress: compare_backends(opts(), runs, warmup, progress=progress,
                                                                      connection=board()), debug, verbose)
        _show(report.comparison_summary(comparison))
        return
    result = _with_progress(lambda progress: run_bench(opts(), runs, warmup, progress, board()), debug, verbose,
                            lambda timed: timed.out_dir)
    _show(report.summary(result.report))


@task(help={"target": "a Linux target with a TVM runtime: host (timed here) or an emulated board (instructions "
                      "under qemu-user) (default host)",
            "model": HELP["model"], "input_shape": HELP["input_shape"], **TUNING_HELP,
            "trials": "tuning candidates to measure in all (default 200)",
            "timeout": "minutes at most (default 10); Ctrl-C also stops and keeps what is tuned",
            "refine": "tune again the kernels already in the database, the search starting from their best records",
            "rpc": "time the candidates on a real board of a TVM RPC farm: the tracker's HOST:PORT",
            "key": BOARD_HELP["key"], "debug": HELP["debug"]}, iterable=["input_shape"])
def tune(c, target="host", model=None, input_shape=None, trials=200, timeout=10.0, tuning_db=None, refine=False,
         rpc=None, key=None, debug=False):
    """Tune the model's TVM kernels for a target (MetaSchedule) into its tuning database; tvm builds apply it."""
    from toolchain.pipeline.tune import run_tune

    opts = lambda: options.build_options(target, model, "tvm", None, input_shape, None, 32, 1,  # noqa: E731
                                         tuning_db=tuning_db)
    board = options.board_connection(host=None, port=0, identity=None, known_hosts=None, rpc=rpc, key=key)
    result = _finish(lambda: run_tune(opts(), int(trials), float(timeout), console.ProgressPrinter(), refine, board),
                     debug)
    from toolchain.pipeline.report import tune_summary

    _show(tune_summary(result))


@task(help={**{k: v for k, v in HELP.items() if k not in QUANTIZE_OPTIONS + ("precision", "layer_precision", "set")},
            **{k: BOARD_HELP[k] for k in ("port", "identity", "known_hosts")},
            "host": "the Linux board, [USER@]ADDRESS (required)", "allow_unsigned": ALLOW_UNSIGNED},
      iterable=["input_shape"])
def deploy(c, target="rpi4", model=None, backend=None, out=None, input_shape=None, data=None, samples=32, threads=1,
           host=None, port=0, identity=None, known_hosts=None, signing_key=None, encrypt=None, allow_unsigned=False,
           debug=False):
    """Build if needed, check the bundle against its manifest's sha256 and copy it to a board over SSH."""
    from toolchain.boards import deploy as deployment
    from toolchain.pipeline.build import build as run_build

    def action():
        if not host:
            from toolchain.errors import BadInput

            raise BadInput("deploy needs --host [USER@]ADDRESS.")
        built = run_build(options.build_options(target, model, backend, out, input_shape, data, samples, threads,
                                                signing_key=signing_key, encrypt=encrypt), console.ProgressPrinter(),
                          refuse_altered=True)
        return deployment.deploy(built.out_dir, host, port or None, identity, known_hosts,
                                 progress=console.ProgressPrinter(), allow_unsigned=allow_unsigned)

    done = _finish(action, debug)
    state = "copied" if done.copied else "already there, nothing copied"
    _show(f"{done.host}:{done.remote_dir} ({done.files} files, {done.bytes / 1e6:.2f} MB, {state}); "
          f"run it there with: cd {done.remote_dir} && ./run.sh IN_DIR OUT_DIR SAMPLES WARMUP REPEAT")


@task(help={**{k: v for k, v in HELP.items() if k not in ("backend", "threads", "signing_key", "encrypt") + QUANTIZE_OPTIONS},
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
    _show(report.summary(result.report))


@task(help={"model": HELP["model"], "input_shape": HELP["input_shape"], "debug": HELP["debug"]},
      iterable=["input_shape"])
def inspect(c, model, input_shape=None, debug=False):
    """Print a model's inputs/outputs, op histogram, parameters and MACs; for a model whose shapes need its dynamic
    dimensions pinned, its inputs with those dimensions and how to pin them (--input-shape)."""
    from pathlib import Path

    from toolchain.model.summary import inspect_model

    with console.framework_output(debug):  # ONNX Runtime logs a failed shape run itself; the error says it once
        text = _finish(lambda: inspect_model(Path(model), options.parse_input_shapes(input_shape or []) or None), debug)
    _show(text)


@task(help={k: HELP[k] for k in ("target", "model", "backend", "input_shape", "debug")}, iterable=["input_shape"])
def check(c, target="rpi4", model=None, backend=None, input_shape=None, debug=False):
    """Pre-flight, building nothing: the model's inputs and outputs, which of the target's backends take its ops,
    its estimated weights and activations against the board's flash and RAM, and what to do about each problem."""
    from pathlib import Path

    from toolchain.pipeline.check import check_model, check_text
    from toolchain.target.profile import load_target

    def action():
        if model is None:
            from toolchain.model.default import default_model

            model_path = default_model(console.quiet)[0]
        else:
            model_path = Path(model)
        return check_model(load_target(target), model_path, options.parse_input_shapes(input_shape or []) or None,
                           None if backend in (None, "auto") else backend)

    with console.framework_output(debug):
        result = _finish(action, debug)
    _show(check_text(result))


@task(help={"targets": "comma-separated target profiles (default: all)", "debug": HELP["debug"]})
def doctor(c, targets=None, debug=False):
    """Every tool the targets need here (compilers, qemu, the counting plugin, runtimes, nvcc, Vela, probes, ...),
    found with its version or missing with how to install it. Exit 3 when a tool a target's default build needs
    is missing (optional ones, e.g. probes for a real board or Vitis, never fail it)."""
    from toolchain.errors import EXIT_MISSING_TOOL
    from toolchain.pipeline.doctor import diagnose, doctor_text

    diagnosis = _finish(lambda: diagnose(options.parse_names(targets) if targets else None), debug)
    _show(doctor_text(diagnosis))
    if diagnosis.missing:
        raise Exit(code=EXIT_MISSING_TOOL)


@task(help={"debug": HELP["debug"]})
def targets(c, debug=False):
    """List the target profiles."""
    from toolchain.target.profile import target_table

    _show(_finish(target_table, debug))


@task(help={"key": "where to write the private key (default: the per-user key, <config>/edgeyard/signing-key.pem); "
                   "the public key goes beside it as .pub",
            "force": "replace an existing key (builds signed with the old one no longer verify)",
            "aes": "make a 32-byte AES-256 key for build --encrypt in this file instead (mode 600)",
            "debug": HELP["debug"]})
def keygen(c, key=None, force=False, aes=None, debug=False):
    """Make an Ed25519 signing key; from then on every build signs its manifest and provenance with it.
    With --aes FILE: a 32-byte AES-256 key for invoke build --encrypt FILE instead."""
    from toolchain import signing

    if aes:
        from toolchain import encryption

        made = _finish(lambda: encryption.keygen(aes, force), debug)
        _show(f"encryption key {made} (keep it private; copy it to the board as {encryption.BOARD_KEY_PATH} or "
              f"name it in ${encryption.KEY_ENV}): invoke build --encrypt {made}")
        return
    private, public = _finish(lambda: signing.keygen(key, force), debug)
    _show(f"signing key {private} (keep it private), public key {public} (give it to whoever checks builds: "
          f"invoke verify DIR --key {public})")


@task(help={"key": "public (.pub) or private key the signature must be by (default: the signing key builds use)",
            "debug": HELP["debug"]})
def verify(c, out, key=None, debug=False):
    """Check a build folder: every file against the manifest, the manifest and provenance against the
    signature. Exit 0 intact and signed, 1 altered (the file is named), 2 unsigned or not a build."""
    from pathlib import Path

    from toolchain import signing

    trust = _finish(lambda: signing.check_build(Path(out), Path(key) if key else None, require_signed=True), debug)
    _show(f"{out}: intact, {trust.files} files checked, signed by key {trust.signer}")


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


@task(help={**MATRIX_HELP, **SCALE_HELP, **VERBOSE,
            "backend": "auto (default) or one backend for every build",
            "out": "folder for the builds and coverage.json/.md (default: build/coverage/)"})
def coverage(c, models, targets="host", backend="auto", out=None, samples=32, jobs=0, scheduler=None, debug=False,
             verbose=False):
    """Build every model in a folder for every target; print the matrix, write coverage.json, .md and .html."""
    from pathlib import Path

    from toolchain.pipeline.coverage import matrix_text, run_coverage

    result = _with_progress(lambda progress: run_coverage(Path(models), options.parse_names(targets), backend,
                                                          Path(out) if out else None, samples, progress,
                                                          options.scheduler_address(scheduler), jobs or None),
                            debug, verbose, lambda done: Path(done["out_dir"]))
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


@task(help={"target": "a microcontroller target profile (default nucleo-l4r5zi, MLPerf Tiny's reference board)",
            "models": "folder holding the MLPerf Tiny int8 models kws_ref_model.tflite, vww_96_int8.tflite, "
                      "pretrainedResnet_quant.tflite, ad01_int8.tflite (default: ../shared/models/mlperf_tiny/ "
                      "beside the project, when it exists)",
            "backends": "comma-separated backends to compare, e.g. kernels,tvm (default: the target's)",
            "out": "folder for the builds and mcu_bench.json/.md (default: build/mcu-bench/)",
            "samples": HELP["samples"], "debug": HELP["debug"]})
def bench_mcu(c, target="nucleo-l4r5zi", models=None, backends=None, out=None, samples=32, debug=False):
    """MLPerf Tiny int8 models on a microcontroller, per backend: instructions, estimated cycles, arena vs
    TFLite Micro's, flash, RAM and the best published cycles; one table, also in mcu_bench.json/.md."""
    from pathlib import Path

    from toolchain.pipeline.mcu_bench import run_mcu_bench
    from toolchain.pipeline.report import mcu_bench_text

    result = _finish(lambda: run_mcu_bench(target, Path(models) if models else None,
                                           options.parse_names(backends) if backends else None,
                                           Path(out) if out else None, samples, console.ProgressPrinter()), debug)
    print(mcu_bench_text(result))


@task(help={"models": "folder of MLPerf Tiny .tflite models (default ../shared/models/mlperf_tiny beside the project, "
                      "when it exists)", **TUNING_HELP,
            "runs": "host: timed runs of each variant (default 100, in 10 rounds)",
            "samples": "validation samples of each build (default 8)",
            "targets": "comma-separated, of host and rpi4 (default both)", "debug": HELP["debug"]})
def bench_linux(c, models=None, tuning_db=None, runs=100, samples=8, targets="host,rpi4", debug=False):
    """The MLPerf Tiny models on the host (latency) and rpi4 (instructions): tvm untuned and tuned, litert,
    onnxruntime and auto, with auto's ratio to the best of litert and onnxruntime."""
    from pathlib import Path

    from toolchain.pipeline.linux_bench import linux_bench_text, run_linux_bench

    result = _finish(lambda: run_linux_bench(Path(models) if models else None, Path(tuning_db) if tuning_db else None,
                                             int(samples), int(runs), tuple(options.parse_names(targets)),
                                             console.ProgressPrinter()), debug)
    _show(linux_bench_text(result))


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
            "probe": "pyocd, openocd, st-flash, or gdb for any GDB server (default: the target's)",
            "gdb_server": "HOST:PORT of the GDB server, for --probe gdb (pyocd gdbserver, OpenOCD, J-Link, ST-LINK, "
                          "Black Magic, qemu-system -gdb)",
            "image": "board: the image linked for the board (default); emulator: the one for the target's emulator, "
                     "through a GDB server", "dry_run": "print the commands (and gdb script) only",
            "allow_unsigned": ALLOW_UNSIGNED, "debug": HELP["debug"]})
def flash(c, target="nucleo-l4r5zi", model=None, backend=None, out=None, probe=None, gdb_server=None, image="board",
          dry_run=False, allow_unsigned=False, debug=False):
    """Write a build's firmware to a board with a debug probe or through a GDB server, and verify it (the build
    and its signature are checked first)."""
    import shlex

    from toolchain.boards.flashers import SCRIPT_NAME
    from toolchain.boards.flashers import flash as write_firmware
    from toolchain.paths import build_dir_for
    from toolchain.target.profile import load_target

    out_dir = _finish(lambda: build_dir_for(target, model, backend or load_target(target).default_backend, out), debug)
    plan = _finish(lambda: write_firmware(target, out_dir, probe, dry_run, image, gdb_server, allow_unsigned), debug)
    _show("\n".join(shlex.join(argv) for argv in plan.commands))
    if dry_run and plan.script is not None:
        _show(f"\n{SCRIPT_NAME}, in the folder the command runs in:\n{plan.script}")
    _show(f"{'would verify' if dry_run else 'verified'}: {plan.verifies}")


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
    _show(summary(result.report))


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
    _show(summary(result.report))
