"""MetaSchedule tuning of a model's kernels for a target (`invoke tune`), kept in a JSON database per target that
every tvm build for that target applies (shared_runtime.py).

The database of a target is the folder <root>/<target>-<hash of its tvm_target, the host CPU named>/ holding
MetaSchedule's database_workload.json and database_tuning_record.json; root is --tuning-db DIR, else
<cache>/tvm-tuning. Records are keyed by workload (a kernel's structural hash) and target, so models sharing a
kernel share its tuning, and the folder can be copied between machines or committed to a repository.

What a candidate costs:
  - the host (a target this machine runs natively): its time, measured in this process with the measuring
    thread pinned to one core while search and builds use every core;
  - an emulated Linux board (qemu-user): the instructions one call executes under qemu-user, counted by the
    plugin (hostenv/qemu_plugin.py) around firmware/tvm_kernel_runner.cpp: deterministic, for a board you do
    not have. Instructions are not cycles: confirm a winner on the board;
  - a real board (--rpc HOST:PORT --key KEY): its time, measured there by TVM's RPC server registered with a
    tracker under that key (as the tvm-rpc runner runs bundles).
Tasks whose kernel already has a record in the database are not tuned again, so a second run re-measures nothing;
--refine tunes them all again, first timing each task's best records again where the cost is a time (records timed
under load are inflated). After the search each tuned task tries the best schedules of the model's other tasks (a
neighbour's often suits it better than its own search found). MetaSchedule appends a batch's records to the database
when it collects the batch's results, which its scheduler does once every task had its turn; Ctrl-C and the timeout
stop tuning before the next batch is built, and every measured batch is collected then, so what was measured is
kept. tvm is imported inside functions.
"""

import hashlib
import json
import os
import platform
import shutil
import signal
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ... import proc
from ...console import Progress
from ...errors import BadInput, BuildError, reason
from ...hostenv import cross, host_cpu, qemu_plugin, tvm_runtimes
from ...model.info import ModelInfo
from ...paths import FIRMWARE_DIR, cache_dir
from ...target.profile import Target
from ..base import ReportSection

DATABASE_FILES = ("database_workload.json", "database_tuning_record.json")
# The kernels worth tuning: after tuning, convolutions and matrix products are over 99.8% of kernel time.
TUNED_OPS = ("conv2d", "matmul", "dense")
TRIALS_PER_ITERATION = 16  # with 64, a small budget ran out before every convolution was reached (at most --trials)
RETIMED_PER_TASK = 8  # --refine by latency: each task's best records, timed again before the search
SCHEDULES_FROM_EACH_TASK = 4  # after the search: each other task's best schedules tried on a tuned task
COUNTED_CALLS = (1, 9)  # calls of the kernel in the two counted runs: (c9 - c1) / 8 is one call
KERNEL_RUNNER = "tvm_kernel_runner.cpp"
_COUNT_TIMEOUT_S = 120


def load_tensor_intrinsics() -> None:
    """Import tvm.s_tir.tensor_intrin (MetaSchedule's TuneContext does, and the import parses hundreds of
    TVMScript functions) before TensorFlow is loaded, with a cheaper inspect.stack while it runs: TVMScript's
    parser calls inspect.stack() for every function, which reads the source of every frame and scans all of
    sys.modules for each (44 s of CPU here; over a minute once TensorFlow has filled sys.modules). The parser
    reads the code of the first frames only (is_defined_in_class: frame 2), so only they keep their context."""
    import inspect
    import sys

    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return

    def first_frames_with_context(context: int = 1) -> list:
        frames, frame = [], sys._getframe(1)
        while frame is not None:
            info = inspect.getframeinfo(frame, context if len(frames) <= 3 else 0)
            frames.append(inspect.FrameInfo(frame, *info, positions=info.positions))
            frame = frame.f_back
        return frames

    original, inspect.stack = inspect.stack, first_frames_with_context
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = original


def database_dir(target: Target, root: Path | None) -> Path:
    """The target's tuning database folder (it may not exist yet)."""
    settings = json.dumps(host_cpu.resolved(target.tvm_target), sort_keys=True)
    folder = f"{target.name}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"
    return (Path(root) if root is not None else cache_dir() / "tvm-tuning") / folder


def database_fingerprint(target: Target, root: Path | None) -> str | None:
    """A hash of the target's tuning records, None when it has none: part of a tvm build's cache key (cheap)."""
    files = [database_dir(target, root) / name for name in DATABASE_FILES]
    if not all(f.is_file() for f in files) or files[1].stat().st_size == 0:
        return None
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


def tuning_target(target: Target):
    """The tvm.target.Target that tuning measures and tuned builds compile for: one core, as builds run."""
    from .frontend import tvm_target_of

    return tvm_target_of(target, {**target.tvm_target, "num-cores": 1})


def _prepared(ir_module):
    """The imported module lowered to fused TIR kernels, the form tuning extracts its tasks from."""
    import tvm
    from tvm import relax

    passes = [relax.transform.DecomposeOpsForInference(), relax.transform.CanonicalizeBindings(),
              relax.get_pipeline("zero")]
    return tvm.transform.Sequential(passes)(ir_module)


def _tasks(module, tvm_target) -> list:
    """The module's tuning tasks (MetaSchedule ExtractedTask) of the ops worth tuning."""
    from tvm.s_tir import meta_schedule as ms

    return [task for task in ms.relax_integration.extract_tasks(module, tvm_target)
            if any(op in task.task_name for op in TUNED_OPS)]


def _is_tuned(database, task, tvm_target) -> bool:
    kernel = task.dispatched[0]
    return database.has_workload(kernel) and database.query_tuning_record(kernel, tvm_target, "main") is not None


def _database(folder: Path):
    from tvm.s_tir import meta_schedule as ms

    folder.mkdir(parents=True, exist_ok=True)
    return ms.database.JSONDatabase(work_dir=str(folder))


def tuned_module(ir_module, target: Target, root: Path | None, progress: Progress):
    """(module, tvm target, report section) for a build: with the database's schedules applied when the target
    has tuning records, else the module and the profile's target as they are and no section."""
    from .frontend import tvm_target_of

    if database_fingerprint(target, root) is None:
        return ir_module, tvm_target_of(target), None
    from tvm import relax

    folder = database_dir(target, root)
    tvm_target = tuning_target(target)
    module = _prepared(ir_module)
    database = _database(folder)
    tasks = _tasks(module, tvm_target)
    tuned = sum(_is_tuned(database, task, tvm_target) for task in tasks)
    progress(f"applying the tuning database {folder}: {tuned} of the model's {len(tasks)} tunable tasks tuned")
    with tvm_target, database:
        module = relax.transform.MetaScheduleApplyDatabase()(module)
    data = {"database": str(folder), "tasks": len(tasks), "tuned": tuned}
    summary = f"tuning: {tuned} of {len(tasks)} tunable tasks tuned, from {folder}"
    return module, tvm_target, ReportSection("tuning", data, summary)


@dataclass
class TuneResult:
    """What `invoke tune` did (tune.json's and the console's)."""

    target: str
    model: str
    database: str
    measured_by: str  # "latency" (seconds, here) or "instructions" (under qemu-user)
    tasks: list[dict]  # [{name, tuned_before, best}] best: the database's best now (seconds or instructions) for
    # a task measured by this run, else None
    trials: int  # candidates measured by this run
    seconds: float
    retimed: int  # records timed again before the search (--refine by latency), not counted in trials
    borrowed: int  # other tasks' schedules measured on a tuned task after the search, not counted in trials
    improved_by_borrowing: int  # tasks whose best kernel is now another task's schedule
    stopped: str | None  # why it stopped before the budget: "timeout", "interrupted", or None

    @property
    def tuned(self) -> int:
        return sum(1 for task in self.tasks if task["tuned_before"] or task["best"] is not None)


def tune(model: ModelInfo, target: Target, trials: int, timeout_s: float, root: Path | None,
         progress: Progress, refine: bool = False, board: tuple[tuple[str, int], str] | None = None) -> TuneResult:
    """Tune the model's kernels not yet in the target's database (all of them with `refine`: the search then
    starts from the database's best records), `trials` candidates at most in all, for at most `timeout_s`
    seconds; every measured candidate is in the database when this returns (or is interrupted). With `board`
    ((tracker host, port), key) candidates are timed on that board of a TVM RPC farm."""
    from tvm.s_tir import meta_schedule as ms

    from .frontend import imported_module

    by = _measured_by(target, board)
    tvm_target = tuning_target(target)
    if board is not None:
        runner = RpcRunner(*board)
    elif by == "latency":
        runner = HostRunner()
    else:
        runner = InstructionRunner(target, kernel_runner(target, progress))
    gxx = None if target.arch == platform.machine() else cross.find_tool(target, "g++")
    folder = database_dir(target, root)
    module = _prepared(imported_module(model, progress))
    database = _database(folder)
    tasks = _tasks(module, tvm_target)
    todo = [task for task in tasks if refine or not _is_tuned(database, task, tvm_target)]
    records = [{"name": task.task_name, "tuned_before": _is_tuned(database, task, tvm_target), "best": None}
               for task in tasks]
    progress(f"{len(tasks)} tunable tasks in {model.path.name}, {sum(r['tuned_before'] for r in records)} already in "
             f"{folder}" + ("; refining them all from their best records" if refine else ""))
    started = time.monotonic()
    watch = _Watch([records[tasks.index(task)] for task in todo], trials, timeout_s, by, progress)
    retimed = borrowed = 0
    improved: set[str] = set()
    if todo:
        with tempfile.TemporaryDirectory(prefix="edgeyard-tune-") as work:
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(todo, work_dir=work)
            builder = InProcessBuilder(gxx, Path(work), watch.check)
            if refine and by == "latency":
                retimed = _retime_best(database, todo, builder, runner, progress)
            callbacks = [*ms.MeasureCallback.create("default"), watch.callback()]
            main = threading.current_thread() is threading.main_thread()  # where signal handlers live
            previous = signal.signal(signal.SIGINT, watch.interrupt) if main else None
            scheduler = ms.TaskScheduler.create("gradient")
            try:
                ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=work, max_trials_global=trials,
                              num_trials_per_iter=min(TRIALS_PER_ITERATION, trials), builder=builder, runner=runner,
                              database=database, cost_model=_cost_model(), measure_callbacks=callbacks,
                              task_scheduler=scheduler)
            except Exception as err:  # the watch's stop (Ctrl-C, time up) arrives as an error through TVM's C++
                if watch.stopped is None:
                    raise BuildError(f"tuning {model.path.name} for {target.name} failed: {reason(err)}") from err
                _collect(scheduler, len(contexts))
            finally:
                if main:
                    signal.signal(signal.SIGINT, previous)
            if watch.stopped != "interrupted":
                lender = InProcessBuilder(gxx, Path(work), lambda: None)  # after --timeout too: a bounded pass
                borrowed, improved = _borrow_schedules(database, todo, tasks, lender, runner, progress)
    for task, record in zip(tasks, records):
        if record["best"] is not None or task.task_name in improved:
            best = _cost(database.get_top_k(database.commit_workload(task.dispatched[0]), 1)[0].run_secs)
            record["best"] = best * 1e9 if by == "instructions" else best
    return TuneResult(target.name, str(model.path), str(folder), by, records, watch.trials,
                      round(time.monotonic() - started, 1), retimed, borrowed, len(improved), watch.stopped)


def _retime_best(database, tasks: list, builder, runner, progress: Progress) -> int:
    """Time each task's best records again, here and now, adding the new timings as records; the number timed.
    A time measured on a busy machine is inflated, and the database ranks a kernel by its lowest time: without
    this, the candidates of a quiet --refine would outrank better kernels that were merely timed under load."""
    records = [record for task in tasks if database.has_workload(task.dispatched[0])
               for record in database.get_top_k(database.commit_workload(task.dispatched[0]), RETIMED_PER_TASK)]
    progress(f"timing the {len(records)} best records of {len(tasks)} tasks again (times measured under load "
             "are inflated)")
    candidates = [(record, record.workload, module) for record in records
                  if (module := _applied(record, record.workload)) is not None]
    costs = _measure_into(database, candidates, builder, runner)
    return sum(cost is not None for cost in costs)


def _borrow_schedules(database, tuned: list, tasks: list, builder, runner, progress: Progress) -> tuple[int, set]:
    """Try the best schedules of the model's other tasks on each tuned task, where a schedule applies (the same
    blocks: a convolution of other channels or another epilogue), adding each measured one as a record of the
    task; (schedules measured, names of the tasks whose best improved). MetaSchedule's search starts from a task's own
    records only, and on ResNet-8 (host) four convolutions ran 8-40% faster with a neighbour's schedule than
    with their own best after 1,900 trials."""
    best = {task.task_name: database.get_top_k(database.commit_workload(task.dispatched[0]),
                                               SCHEDULES_FROM_EACH_TASK)
            for task in tasks if database.has_workload(task.dispatched[0])}
    before, candidates = {}, []
    for task in tuned:
        workload = database.commit_workload(task.dispatched[0])
        own = database.get_top_k(workload, 1)
        before[task.task_name] = _cost(own[0].run_secs) if own else None
        for other, records in best.items():
            if other == task.task_name:
                continue
            candidates += [(task, record, workload, module) for record in records
                           if (module := _applied(record, workload)) is not None]
    progress(f"trying the best schedules of the model's other tasks on each tuned task: {len(candidates)} apply")
    costs = _measure_into(database, [candidate[1:] for candidate in candidates], builder, runner)
    improved = set()
    for (task, *_), cost in zip(candidates, costs):
        previous = before[task.task_name]
        if cost is not None and (previous is None or cost < previous):
            improved.add(task.task_name)
    return sum(cost is not None for cost in costs), improved


def _applied(record, workload):
    """The record's schedule applied to the workload's kernel (an IRModule); None when it does not apply."""
    from tvm import s_tir

    schedule = s_tir.Schedule(workload.mod)
    try:
        record.trace.apply_to_schedule(schedule, remove_postproc=False)
    except Exception:  # noqa: BLE001 - TVM raises anything when a schedule names other blocks or loop extents
        return None
    return schedule.mod


def _measure_into(database, candidates: list, builder, runner) -> list:
    """Build and measure each (record, workload, module: the record's schedule applied to the workload's kernel);
    every one measured is added to the database as a record of that workload. The costs (None where it failed)."""
    from tvm.s_tir import meta_schedule as ms

    built = builder.build([ms.builder.BuilderInput(module, record.target) for record, _, module in candidates])
    runnable = [index for index, result in enumerate(built) if result.error_msg is None]
    arguments = [ms.arg_info.ArgInfo.from_prim_func(workload.mod["main"]) for _, workload, _ in candidates]
    futures = runner.run([ms.runner.RunnerInput(built[i].artifact_path, "cpu", arguments[i]) for i in runnable])
    costs = [None] * len(candidates)
    for index, future in zip(runnable, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            record, workload, _ = candidates[index]
            database.commit_tuning_record(ms.database.TuningRecord(record.trace, workload, result.run_secs,
                                                                   record.target, arguments[index]))
            costs[index] = _cost(result.run_secs)
    return costs


def _cost(run_secs) -> float:
    """A record's or a result's cost as the database ranks them: the mean of its measurements."""
    return sum(float(secs) for secs in run_secs) / len(run_secs)


def _collect(scheduler, tasks: int) -> None:
    """After a stop: collect every task's measured batch, which puts its records in the database."""
    for task_id in range(tasks):
        try:
            scheduler.join_running_task(task_id)
        except Exception:  # noqa: S110 - a task with no batch running has nothing to collect
            continue


def _measured_by(target: Target, board: tuple[str, int] | None) -> str:
    """"latency" where candidates are timed (this machine running the target natively, or the board of a TVM RPC
    farm), "instructions" where qemu-user runs them."""
    if target.tvm_target.get("kind") != "llvm" or target.tvm_runtime != "shared":
        raise BadInput(f"invoke tune tunes TVM's kernels for Linux boards with a TVM runtime; {target.name} "
                       "is not one.")
    if board is not None or ("host" in target.runners and target.arch == platform.machine()):
        return "latency"
    if "qemu-user" in target.runners and target.emulator:
        return "instructions"
    raise BadInput(f"target {target.name} has neither the host runner nor qemu-user: nothing here can measure "
                   "its tuning candidates (a board of a TVM RPC farm can: --rpc HOST:PORT --key KEY).")


def _cost_model():
    """xgboost's cost model when xgboost is installed (it is a dependency), else random search."""
    try:
        import xgboost  # noqa: F401
    except ImportError:
        return "random"
    return "xgb"


def _done(result):
    """A MetaSchedule runner future that is already done with `result` (a RunnerResult)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunnerFuture

    @derived_object
    class Done(PyRunnerFuture):
        def __init__(self, outcome):
            super().__init__()
            self.outcome = outcome

        def done(self):
            return True

        def result(self):
            return self.outcome

    return Done(result)


def _arguments(runner_input, device) -> list:
    """A candidate's arguments on `device`, filled with ones: a kernel's constant divisor (an int8 average pool's
    window count) is an argument when tuned, and zeros make x86's integer division trap (SIGFPE), which kills the
    process the candidate runs in."""
    import numpy as np
    import tvm

    return [tvm.runtime.tensor(np.ones([int(d) for d in info.shape], str(info.dtype)), device)
            for info in runner_input.args_info]


def HostRunner(repeat: int = 3, min_repeat_ms: int = 20):
    """A MetaSchedule runner timing candidates in this process with this thread pinned to one core (the search
    and the builds use the others): MetaSchedule's LocalRunner workers, each a new Python importing TVM, ran
    out of their time here. Cost: the median of `repeat` timings of at least `min_repeat_ms` each."""
    import numpy as np
    import tvm
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerResult

    def measure(runner_input):
        try:
            library = tvm.runtime.load_module(runner_input.artifact_path)
            device = tvm.cpu()
            args = _arguments(runner_input, device)
            timer = library.time_evaluator("main", device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
            return RunnerResult([float(np.median(timer(*args).results))], None)
        except Exception as err:  # a candidate that fails to run is a failed trial, not a failed tune
            return RunnerResult(None, f"{type(err).__name__}: {reason(err)}")

    @derived_object
    class Runner(PyRunner):
        def run(self, runner_inputs):
            cores = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {min(cores)})  # this thread only (pid 0 on Linux)
            try:
                return [_done(measure(runner_input)) for runner_input in runner_inputs]
            finally:
                os.sched_setaffinity(0, cores)

    return Runner()


def check_board(tracker: tuple[str, int], key: str, progress: Progress) -> None:
    """Ask the TVM RPC tracker for the board registered under `key` once, before anything is loaded or built: a
    wrong --rpc or --key is one sentence at once."""
    from ...runners.tvm_rpc import on_board

    progress(f"timing candidates on the board '{key}' of the TVM RPC tracker {tracker[0]}:{tracker[1]}")
    on_board(tracker, key, _COUNT_TIMEOUT_S, lambda remote: remote.cpu().exist, f"reaching the board '{key}' over RPC")


def RpcRunner(tracker: tuple[str, int], key: str, repeat: int = 3, min_repeat_ms: int = 20):
    """A MetaSchedule runner timing candidates on the board registered under `key` at a TVM RPC tracker (checked
    first: check_board), with the board's own time_evaluator (one session per batch); the cost is as
    HostRunner's."""
    import numpy as np
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerResult

    from ...runners.tvm_rpc import on_board

    what = f"reaching the board '{key}' over RPC"

    def measure(remote, runner_input):
        try:
            name = f"{Path(runner_input.artifact_path).parent.name}.so"  # candidates' folders have unique names
            remote.upload(runner_input.artifact_path, target=name)
            library = remote.load_module(name)
            device = remote.cpu()
            args = _arguments(runner_input, device)
            timer = library.time_evaluator("main", device, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
            cost = float(np.median(timer(*args).results))
            remote.remove(name)
            return RunnerResult([cost], None)
        except Exception as err:  # a candidate that fails to run is a failed trial, not a failed tune
            return RunnerResult(None, f"{type(err).__name__}: {reason(err)}")

    @derived_object
    class Runner(PyRunner):
        def run(self, runner_inputs):
            results = on_board(tracker, key, _COUNT_TIMEOUT_S * len(runner_inputs),
                               lambda remote: [measure(remote, runner_input) for runner_input in runner_inputs], what)
            return [_done(result) for result in results]

    return Runner()


class _Watch:
    """Progress after each batch (best cost so far, time left); raises once the time is up."""

    def __init__(self, records: list[dict], trials: int, timeout_s: float, by: str, progress: Progress):
        self.records, self.budget, self.timeout_s, self.by, self.progress = records, trials, timeout_s, by, progress
        self.trials, self.started, self.stopped = 0, time.monotonic(), None

    def cost_text(self, cost: float) -> str:
        return f"{cost:,.0f} instructions" if self.by == "instructions" else f"{cost * 1e6:.1f} us"

    def batch(self, task_id: int, runner_results) -> None:
        costs = [_cost(r.run_secs) for r in runner_results if r.error_msg is None and r.run_secs]
        costs = [c * 1e9 if self.by == "instructions" else c for c in costs]
        record = self.records[task_id]
        if costs:
            record["best"] = min([c for c in (record["best"], *costs) if c is not None])
        self.trials += len(runner_results)
        elapsed = time.monotonic() - self.started
        left = min(self.timeout_s - elapsed, elapsed / self.trials * max(self.budget - self.trials, 0))
        best = self.cost_text(record["best"]) if record["best"] is not None else "none valid yet"
        self.progress(f"trial {self.trials}/{self.budget}: {record['name']} best {best}; "
                      f"{elapsed:.0f} s so far, about {max(left, 0):.0f} s left")

    def interrupt(self, signum, frame) -> None:
        """SIGINT (Ctrl-C) while tuning: stop at the next batch (a KeyboardInterrupt raised wherever Python
        happens to be, a __del__ among them, can be swallowed)."""
        self.stopped = "interrupted"

    def check(self) -> None:
        """Raise once Ctrl-C was pressed or the time is up (called before each batch is built)."""
        if self.stopped is None and time.monotonic() - self.started >= self.timeout_s:
            self.stopped = "timeout"
        if self.stopped is not None:
            raise TimeoutError(f"tuning stopped: {self.stopped}")

    def callback(self):
        from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback
        from tvm.ir.utils import derived_object

        watch = self

        @derived_object
        class WatchCallback(PyMeasureCallback):
            def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
                watch.batch(task_id, runner_results)

        return WatchCallback()


def InProcessBuilder(gxx: Path | None, work: Path, before_each_batch):
    """A MetaSchedule builder that builds in this process (MetaSchedule's LocalBuilder workers spend longer
    importing TVM than its build timeout), cross-linking with `gxx` for another architecture; each candidate in
    a new folder inside `work`. before_each_batch() may raise to stop the tuning."""
    import tvm.support.cc
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import default_build
    from tvm.ir.utils import derived_object

    @derived_object
    class Builder(PyBuilder):
        def build(self, build_inputs):
            before_each_batch()
            results = []
            for build_input in build_inputs:
                # A folder of its own: MetaSchedule's RemoveBuildArtifact deletes the artifact's whole folder.
                path = Path(tempfile.mkdtemp(prefix="candidate-", dir=work)) / "candidate.so"
                try:
                    library = default_build(build_input.mod, build_input.target, None)
                    compile_with = tvm.support.cc.cross_compiler(str(gxx)) if gxx else None
                    library.export_library(str(path), fcompile=compile_with)
                    results.append(BuilderResult(str(path), None))
                except Exception as err:  # a candidate that does not build is a failed trial, not a failed tune
                    results.append(BuilderResult(None, f"{type(err).__name__}: {reason(err)}"))
            return results

    return Builder()


def InstructionRunner(target: Target, runner_program: Path, workers: int = 2):
    """A MetaSchedule runner whose cost is the instructions one call executes under the target's qemu-user with
    the counting plugin (as "seconds": instructions / 1e9). Counts do not depend on load: candidates are
    counted `workers` at a time."""
    from tvm.s_tir.meta_schedule.runner import PyRunner, RunnerResult
    from tvm.ir.utils import derived_object

    def measure(runner_input):
        specs = [f"{info.dtype}:{'x'.join(str(int(d)) for d in info.shape)}" for info in runner_input.args_info]
        try:
            instructions = count_call(target, runner_program, Path(runner_input.artifact_path), specs)
        except BuildError as err:
            return RunnerResult(None, str(err))
        return RunnerResult([instructions / 1e9], None)

    @derived_object
    class Runner(PyRunner):
        def run(self, runner_inputs):
            with ThreadPoolExecutor(max_workers=workers) as pool:
                return [_done(result) for result in pool.map(measure, runner_inputs)]

    return Runner()


def count_call(target: Target, runner_program: Path, library: Path, specs: list[str]) -> int:
    """Instructions one call of `library`'s function main executes on `specs` tensors ("float32:64x64"), counted
    under the target's qemu-user by the plugin with 1 and 5 calls (start-up and loading cancel out)."""
    emulator = list(target.emulator["command"])
    if shutil.which(emulator[0]) is None:
        raise BuildError(f"{emulator[0]} is not installed: run ./bootstrap.sh.")
    counts = []
    with tempfile.TemporaryDirectory(prefix="edgeyard-count-") as work:
        for calls in COUNTED_CALLS:
            count_file = Path(work, f"count{calls}")
            proc.run([*emulator, "-plugin", qemu_plugin.plugin_option(count_file), runner_program,
                      str(library.resolve()), str(calls), *specs], env={}, timeout_s=_COUNT_TIMEOUT_S,
                     what=f"counting the instructions of {library.name}")
            counts.append(int(count_file.read_text()))
    per_call = round((counts[1] - counts[0]) / (COUNTED_CALLS[1] - COUNTED_CALLS[0]))
    if per_call <= 0:  # a kernel of a few instructions, below the runs' own variation: no cost to rank it by
        raise BuildError(f"{library.name} executes too few instructions per call to count apart from the run's "
                         f"start-up ({counts[0]:,} with {COUNTED_CALLS[0]} call, {counts[1]:,} with "
                         f"{COUNTED_CALLS[1]})")
    return per_call


def kernel_runner(target: Target, progress: Progress) -> Path:
    """firmware/tvm_kernel_runner.cpp built for the target (against its TVM runtime, found by rpath), cached in
    the user's cache by the source, runtime and compiler."""
    gxx = cross.find_tool(target, "g++")
    runtime_dir = tvm_runtimes.tvm_runtime_dir(target.arch)
    includes = [f"-I{d}" for d in tvm_runtimes.tvm_ffi_include_dirs()]
    return cross.cached_program("tvm-kernel-runner", target.arch, lambda output: [
        gxx, "-std=c++17", "-O2", *includes, FIRMWARE_DIR / KERNEL_RUNNER, "-o", output, f"-L{runtime_dir}",
        "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", f"-Wl,-rpath,{runtime_dir}",
    ], progress, depends_on=repr(tvm_runtimes.installed_versions()))  # fmt: skip
