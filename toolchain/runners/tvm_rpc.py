"""The tvm-rpc runner: a TVM bundle's model runs on a board of a TVM RPC device farm.

`--rpc HOST:PORT --key KEY` names a TVM RPC tracker and the key the board registered under
(`python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY` on the board). The runner asks the
tracker for that board, uploads model.so (compiled for the board's target), loads it in the board's
Relax VM, runs each sample there for the outputs, and times `main` with the VM's time_evaluator,
one call per repeat: the timings are the board's own. The bundle's C++ runner is not used; the
board runs its own TVM runtime, which must match the apache-tvm that compiled the model.
"""

import gc
import socket
from collections.abc import Callable

import numpy as np

from ..boards.address import host_port
from ..bundle import Entry
from ..errors import BadInput, BuildError, reason
from ..target.profile import Target
from . import register
from .base import Connection, Runner, RunnerCaps, RunRequest

MODEL_LIBRARY = "model.so"  # what the tvm backend compiles (toolchain/backends/tvm/shared_runtime.py)
_AFFINITY_BIG_CORES = 1  # runtime.config_threadpool's AffinityMode kBig
_TRACKER_RETRIES = 2
_CONNECT_TIMEOUT_S = 10


class TvmRpcRunner(Runner):
    name = "tvm-rpc"
    caps = RunnerCaps(remote=True)

    def __init__(self, tracker: tuple[str, int] | None = None, key: str | None = None):
        self.tracker = tracker
        self.key = key

    def connect(self, connection: Connection) -> "TvmRpcRunner":
        if not connection.key:
            raise BadInput("--rpc needs --key, the key the board registered with the tracker.")
        return TvmRpcRunner(host_port(connection.rpc, "--rpc", "a TVM RPC tracker"), connection.key)

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        if self.tracker is None:
            return "it needs a device farm: --rpc HOST:PORT --key KEY"
        if target.os != "linux":
            return f"target {target.name} is not a Linux board"
        if entry.kind != "native":
            return "it runs TVM bundles only"
        if target.tvm_runtime == "none":
            return f"{target.name}'s bundle is one static executable with no TVM runtime to serve RPC"
        return None

    def execute(self, request: RunRequest) -> None:
        manifest = request.manifest
        if manifest["backend"] != "tvm":
            raise BadInput(f"the tvm-rpc runner runs TVM bundles only, not {manifest['backend']}; use --backend tvm.")
        on_board(self.tracker, self.key, request.timeout_s, lambda remote: _run_on_board(remote, request),
                 f"running the TVM bundle on the board '{self.key}' over RPC")


def on_board(tracker: tuple[str, int], key: str, timeout_s: float, work: Callable, what: str):
    """work(remote) in a session (tvm.rpc RPCSession) with the board registered under `key` at the TVM RPC tracker;
    its result. The session is freed before this returns. An error of work is a BuildError saying `what` failed."""
    from tvm import rpc

    host, port = tracker
    try:  # tvm's own client retries an unreachable tracker for a minute, logging each try
        socket.create_connection((host, port), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as err:
        raise BuildError(f"cannot reach the TVM RPC tracker at {host}:{port}: {err.strerror or err}.") from None
    try:
        connection = rpc.connect_tracker(host, port)
        # A request for a key nobody registered would wait for ever: ask what is there first.
        registered = connection.summary()["queue_info"]
        if key not in registered:
            raise BadInput(f"no board is registered with key '{key}' at the TVM RPC tracker {host}:{port} "
                           f"(registered: {', '.join(sorted(registered)) or 'none'}).")
        remote = connection.request(key, session_timeout=timeout_s, max_retry=_TRACKER_RETRIES)
    except (OSError, RuntimeError) as err:
        raise BuildError(f"the TVM RPC tracker at {host}:{port} gave no board with key '{key}': "
                         f"{reason(err)}") from None
    failure = result = None
    try:
        result = work(remote)
    except Exception as err:  # the remote side raises anything from RuntimeError to TypeError
        failure = reason(err)
    finally:
        connection.close()
        # The board serves one session at a time, and the session ends only when the last remote
        # object is freed; the Relax VM's reference cycles would keep it (and the board) for
        # session_timeout. The error's traceback would too: it is gone outside the except block.
        del remote
        gc.collect()
    if failure is not None:
        raise BuildError(f"{what} failed: {failure}")
    return result


def _run_on_board(remote, request: RunRequest) -> None:
    """Outputs of every sample and `repeat` timings of sample 0, from the Relax VM on the board."""
    import tvm

    manifest, in_dir, out_dir, samples = request.manifest, request.in_dir, request.out_dir, request.samples

    remote.upload(str(request.bundle_dir / MODEL_LIBRARY))
    device = remote.cpu()
    remote.get_function("runtime.config_threadpool")(_AFFINITY_BIG_CORES, request.threads)
    vm = tvm.runtime.vm.VirtualMachine(remote.load_module(MODEL_LIBRARY), device)
    batches = [np.fromfile(in_dir / f"input{i}.bin", dtype=spec["dtype"]).reshape(samples, *spec["shape"])
               for i, spec in enumerate(manifest["inputs"])]
    results = [[] for _ in manifest["outputs"]]
    for s in range(samples):
        vm.set_input("main", *(tvm.runtime.tensor(batch[s], device) for batch in batches))
        vm.invoke_stateful("main")
        outputs = vm.get_outputs("main")
        for j, tensor in enumerate(outputs if isinstance(outputs, tuple) else (outputs,)):
            results[j].append(tensor.numpy())
    for j, (spec, tensors) in enumerate(zip(manifest["outputs"], results)):
        np.stack(tensors).astype(spec["dtype"]).tofile(out_dir / f"output{j}.bin")
    if request.repeat > 0:
        vm.set_input("main", *(tvm.runtime.tensor(batch[0], device) for batch in batches))
        for _ in range(request.warmup):
            vm.invoke_stateful("main")
        timer = vm.time_evaluator("invoke_stateful", device, number=1, repeat=request.repeat)
        seconds = timer("main").results
        (out_dir / "timings_ns.txt").write_text("".join(f"{round(t * 1e9)}\n" for t in seconds))


register(TvmRpcRunner())
