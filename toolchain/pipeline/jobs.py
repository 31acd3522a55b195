"""Run a list of independent jobs on a Dask cluster or on a local process pool: the one door for scale-out.

Coverage cells and matrix shards go through it; so can any other list of independent measurements
(tuning candidates, for one). A job is a module-level function and its arguments (both picklable),
plus the Dask worker resources it needs (`qemu`, `cuda`, a board name). With `scheduler`
(tcp://HOST:PORT) the jobs are Dask tasks: a task asking for a resource runs only on a worker started
with `--resources NAME=1`, and a task whose worker died is run again elsewhere (Dask reschedules tasks
of a lost worker; `retries` covers a task that raised). Without it a local pool of `workers`
processes runs them (1: in this process, one after the other); a pool whose process died is started
again for the jobs that had not finished, `retries` times. The results come back in the jobs' order,
each with where it ran.
"""

import multiprocessing
import os
import uuid
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Callable

from ..console import Count, Progress, quiet
from ..errors import BadInput, BuildError, MissingTool, reason

DEFAULT_RETRIES = 2
CONNECT_TIMEOUT_S = 20
LOCAL = "local"  # where a job ran when no Dask scheduler was given
DASK_HINT = "pip install 'edgeyard[scaleout]' (./bootstrap.sh installs it)"


@dataclass(frozen=True)
class Job:
    name: str  # unique among the jobs of one run: progress lines and Dask task keys
    function: Callable  # module-level, so that it pickles by name
    args: tuple = ()
    resources: dict[str, int] = field(default_factory=dict)  # Dask worker resources the job needs


@dataclass(frozen=True)
class Done:
    job: Job
    value: object
    worker: str  # the Dask worker's address, or LOCAL


def default_workers() -> int:
    """The cores this process may use: --jobs' default."""
    return len(os.sched_getaffinity(0))


def run_jobs(jobs: list[Job], scheduler: str | None = None, workers: int | None = None,
             retries: int = DEFAULT_RETRIES, progress: Progress = quiet) -> list[Done]:
    """Every job's result, in the jobs' order: on the Dask cluster at `scheduler`, else on `workers` local processes."""
    if scheduler is not None:
        return _on_dask(jobs, scheduler, retries, progress)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise BadInput(f"--jobs must be at least 1, not {workers}.")
    if workers == 1 or len(jobs) <= 1:
        return [_finished(job, job.function(*job.args), LOCAL, number, len(jobs), progress)
                for number, job in enumerate(jobs, 1)]
    return _on_pool(jobs, workers, retries, progress)


def _finished(job: Job, value, worker: str, number: int, total: int, progress: Progress) -> Done:
    progress(Count(f"[{number}/{total}] {job.name} done" + ("" if worker == LOCAL else f" on {worker}"), number, total))
    return Done(job, value, worker)


def _on_pool(jobs: list[Job], workers: int, retries: int, progress: Progress) -> list[Done]:
    results: dict[int, Done] = {}
    # spawn, not fork: a forked child would share whatever the parent's libraries hold (threads, locks).
    context = multiprocessing.get_context("spawn")
    for attempt in range(retries + 1):
        pending = [index for index in range(len(jobs)) if index not in results]
        if not pending:
            break
        with ProcessPoolExecutor(max_workers=min(workers, len(pending)), mp_context=context) as pool:
            futures = {pool.submit(jobs[index].function, *jobs[index].args): index for index in pending}
            waiting = set(futures)
            while waiting:
                finished, waiting = wait(waiting, return_when=FIRST_COMPLETED)
                for future in finished:
                    index = futures[future]
                    try:
                        value = future.result()
                    except BrokenProcessPool:  # a process died (killed, out of memory): run its jobs again
                        continue
                    results[index] = _finished(jobs[index], value, LOCAL, len(results) + 1, len(jobs), progress)
        if len(results) < len(jobs) and attempt < retries:
            progress(f"a worker process died; running the {len(jobs) - len(results)} unfinished jobs again")
    missing = [jobs[index].name for index in range(len(jobs)) if index not in results]
    if missing:
        raise BuildError(f"worker processes died {retries + 1} times; unfinished: {', '.join(missing)}.")
    return [results[index] for index in range(len(jobs))]


def _on_worker(function: Callable, args: tuple) -> tuple[str, object]:
    """Runs on a Dask worker: the job's result and the address of the worker that made it."""
    from distributed import get_worker

    return get_worker().address, function(*args)


def _on_dask(jobs: list[Job], scheduler: str, retries: int, progress: Progress) -> list[Done]:
    try:
        from distributed import Client, as_completed
    except ImportError:
        raise MissingTool("Dask distributed", DASK_HINT) from None
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as err:
        raise BadInput(f"cannot reach the Dask scheduler at {scheduler}: {reason(err)}.") from None
    with client:
        _check_resources(jobs, client, scheduler)
        run_id = uuid.uuid4().hex[:8]
        futures = {
            client.submit(_on_worker, job.function, job.args, key=f"edgeyard-{run_id}-{index}-{job.name}",
                          resources=job.resources or None, retries=retries, pure=False): index
            for index, job in enumerate(jobs)
        }
        results: dict[int, Done] = {}
        for future in as_completed(futures):
            index = futures[future]
            try:
                worker, value = future.result()
            except Exception as err:  # KilledWorker after too many lost workers, or the job raised `retries`+1 times
                raise BuildError(f"job {jobs[index].name} failed on the Dask cluster at {scheduler}: "
                                 f"{type(err).__name__}: {reason(err)}.") from None
            results[index] = _finished(jobs[index], value, worker, len(results) + 1, len(jobs), progress)
    return [results[index] for index in range(len(jobs))]


def _check_resources(jobs: list[Job], client, scheduler: str) -> None:
    """Fail at once, not hang, when a job asks for a resource no worker of the cluster declares."""
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    declared = {name for worker in workers for name, amount in (worker.get("resources") or {}).items() if amount > 0}
    for job in jobs:
        for name in sorted(set(job.resources) - declared):
            raise BadInput(f"no worker of the Dask cluster at {scheduler} declares the resource '{name}' that "
                           f"{job.name} needs; start one with `dask worker {scheduler} --resources {name}=1`.")
