"""invoke tune: the instruction-count MetaSchedule runner, a tuning database shared between processes, a second
tune that re-measures nothing, --refine, schedules borrowed between a model's tasks, tuned and untuned tvm rows in
bench --backend all; the host profile compiles for this machine's CPU."""

import json
import tempfile
from pathlib import Path

from toolchain.backends.tvm import tuning
from toolchain.pipeline.bench import TUNED_TVM, UNTUNED_TVM, compare_backends
from toolchain.pipeline.build import BuildOptions, build
from toolchain.target.profile import load_target

from conftest import invoke


def _vector_add(length: int, folder: Path) -> Path:
    """A TIR function c = a + b over `length` float32 elements, cross-compiled for the rpi4."""
    import tvm
    import tvm.support.cc
    from tvm import te

    a = te.placeholder((length,), "float32", name="a")
    b = te.placeholder((length,), "float32", name="b")
    c = te.compute((length,), lambda i: a[i] + b[i], name="c")
    function = te.create_prim_func([a, b, c]).with_attr("global_symbol", "main")
    library = tvm.tirx.build(tvm.IRModule({"main": function}), target=tuning.tuning_target(load_target("rpi4")))
    path = folder / f"add{length}.so"
    library.export_library(str(path), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    return path


def test_instruction_count_runner_returns_the_plugins_count_for_a_tiny_tir_function(tmp_path, aarch64_runtime):
    from tvm.s_tir.meta_schedule.arg_info import TensorInfo
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    target = load_target("rpi4")
    program = tuning.kernel_runner(target, print)
    counts = {}
    for length in (256, 1024, 4096):
        library = _vector_add(length, tmp_path)
        args = [TensorInfo("float32", [length])] * 3
        (future,) = tuning.InstructionRunner(target, program).run([RunnerInput(str(library), "cpu", args)])
        result = future.result()
        assert result.error_msg is None
        counts[length] = round(float(result.run_secs[0]) * 1e9)
        # The plugin's own count of one call, counted again: the same number (counts are deterministic).
        assert counts[length] == tuning.count_call(target, program, library, [f"float32:{length}"] * 3)
    # The count is one call's, start-up and loading (hundreds of thousands of instructions) cancelled out: a few
    # instructions per element, the same few whatever the length.
    assert counts[256] < 5_000
    for short, long in ((256, 1024), (1024, 4096)):
        per_element = (counts[long] - counts[short]) / (long - short)
        assert 0.25 <= per_element <= 8


def _two_convolutions(folder: Path) -> Path:
    """A .tflite with two 3x3 convolutions of other shapes (8x8x1 -> 6x6x4 -> 4x4x8) and a dense layer."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((8, 8, 1), batch_size=1), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    path = folder / "two_convolutions.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def test_a_database_tuned_in_one_process_is_applied_by_a_build_in_another(tmp_path):
    model = _two_convolutions(tmp_path)
    database_root = tmp_path / "tuning"
    args = ["tune", "--target", "host", "--model", str(model), "--tuning-db", str(database_root)]
    first = invoke(*args, "--trials", "48")  # 16 per task: every task is reached
    assert first.returncode == 0, first.stderr
    folder = tuning.database_dir(load_target("host"), database_root)
    summary = json.loads((folder / "tune.json").read_text())
    assert summary["measured_by"] == "latency" and summary["trials"] >= 1
    tuned = [task["name"] for task in summary["tasks"] if task["best"] is not None]
    assert len(tuned) == len(summary["tasks"]) == 3 and f"tuned for host in {folder}" in first.stdout
    # After the search each convolution tried the other's best schedules (the same blocks, other loop extents),
    # each measured one a record; whichever is best now, the build below applies it and matches the model.
    assert 1 <= summary["borrowed"] <= 2 * tuning.SCHEDULES_FROM_EACH_TASK
    assert 0 <= summary["improved_by_borrowing"] <= 2
    assert f"{summary['borrowed']} schedules of other tasks tried after the search" in first.stdout
    # A borrowed schedule is recorded for the task it was tried on: the same trace under two workloads.
    workloads_of_trace = {}
    for line in (folder / "database_tuning_record.json").read_text().splitlines():
        workload, (trace, *_) = json.loads(line)
        workloads_of_trace.setdefault(json.dumps(trace), set()).add(workload)
    assert 1 <= sum(len(workloads) > 1 for workloads in workloads_of_trace.values()) <= summary["borrowed"]

    # This process reads what the other wrote: the build applies the records and says how many tasks were tuned.
    built = build(BuildOptions(target="host", model=model, backend="tvm", out=tmp_path / "tuned", samples=4,
                               tuning_db=database_root))
    assert built.report["validation"]["passed"]
    assert built.report["tuning"] == {"database": str(folder), "tasks": len(summary["tasks"]), "tuned": len(tuned)}
    assert f"## TVM tuning\n\n{len(tuned)} of the model's" in (tmp_path / "tuned" / "report.md").read_text()
    untuned = build(BuildOptions(target="host", model=model, backend="tvm", out=tmp_path / "untuned", samples=4,
                                 tuning_db=tmp_path / "empty"))
    assert "tuning" not in untuned.report and untuned.report["cache_key"] != built.report["cache_key"]

    # A second tune of the same model measures nothing already in the database.
    second = invoke(*args, "--trials", "48")
    assert second.returncode == 0, second.stderr
    again = json.loads((folder / "tune.json").read_text())
    assert again["trials"] == 0 or not [t for t in again["tasks"] if t["tuned_before"] is False and t["name"] in tuned]
    assert all(task["tuned_before"] for task in again["tasks"] if task["name"] in tuned)

    # --refine times the best records again (added as records), tunes the tuned kernels again from them, says so.
    records_before = len((folder / "database_tuning_record.json").read_text().splitlines())
    refined = invoke(*args, "--trials", "16", "--refine")
    assert refined.returncode == 0, refined.stderr
    summary = json.loads((folder / "tune.json").read_text())
    assert summary["trials"] >= 1 and "refined now" in refined.stdout
    assert 1 <= summary["retimed"] <= tuning.RETIMED_PER_TASK * len(summary["tasks"])
    assert f"{summary['retimed']} best records timed again first" in refined.stdout
    records_after = len((folder / "database_tuning_record.json").read_text().splitlines())
    assert records_after >= records_before + summary["retimed"] + 1
    assert {t["name"] for t in summary["tasks"] if t["tuned_before"] and t["best"] is not None} & set(tuned)

    # bench --backend all: tvm is two rows, tuned and untuned, each built, validated and timed.
    comparison = compare_backends(BuildOptions(target="host", model=model, out=tmp_path / "all", samples=4,
                                               tuning_db=database_root), runs=3, warmup=1, rounds=1)
    rows = {row["backend"]: row for row in comparison["rows"]}
    assert "tvm" not in rows
    for variant in (TUNED_TVM, UNTUNED_TVM, "litert"):
        assert rows[variant]["validation"]["passed"] and rows[variant]["bench"]["latency_ms"]["median"] > 0
    assert json.loads((tmp_path / "all" / "tvm" / "report.json").read_text())["tuning"]["tuned"] >= 1
    assert "tuning" not in json.loads((tmp_path / "all" / "tvm-untuned" / "report.json").read_text())
    assert "| tvm untuned | passed" in (tmp_path / "all" / "comparison.md").read_text()


def test_the_host_profile_compiles_for_this_machines_cpu(tmp_path, tiny_tflite):
    from tvm.target import codegen

    built = build(BuildOptions(target="host", model=tiny_tflite, backend="tvm", out=tmp_path / "out", samples=4,
                               tuning_db=Path(tempfile.mkdtemp(dir=tmp_path))))
    manifest = json.loads((tmp_path / "out" / "bundle" / "manifest.json").read_text())
    assert manifest["tvm_target"]["mcpu"] == str(codegen.llvm_get_system_cpu()) != "host"
    assert built.report["validation"]["passed"]


def test_the_host_runner_survives_a_kernel_dividing_by_its_argument(tmp_path):
    """A kernel's constant divisor (an int8 average pool's window count) is an argument when tuned: filled with
    zeros, x86's integer division traps (SIGFPE) and kills the tuning process the candidate runs in."""
    import tvm
    from tvm import te
    from tvm.s_tir.meta_schedule.arg_info import TensorInfo
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    a = te.placeholder((64,), "int32", name="a")
    b = te.placeholder((64,), "int32", name="b")
    c = te.compute((64,), lambda i: te.floordiv(a[i], b[i]), name="c")
    function = te.create_prim_func([a, b, c]).with_attr("global_symbol", "main")
    library = tvm.tirx.build(tvm.IRModule({"main": function}), target=tuning.tuning_target(load_target("host")))
    path = tmp_path / "divide.so"
    library.export_library(str(path))
    (future,) = tuning.HostRunner(repeat=1, min_repeat_ms=1).run(
        [RunnerInput(str(path), "cpu", [TensorInfo("int32", [64])] * 3)])
    result = future.result()
    assert result.error_msg is None and float(result.run_secs[0]) > 0
