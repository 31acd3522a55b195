"""`invoke tune`: MetaSchedule tuning of a model's TVM kernels for a target, into the target's tuning database
(backends/tvm/tuning.py), which later tvm builds for that target apply. The model goes through the build's own
plan and conversion (the default model without --model; Keras to TFLite), so tuning sees the kernels a build
compiles."""

import tempfile
from dataclasses import replace
from pathlib import Path

from ..atomic import atomic_write
from ..boards.address import host_port
from ..console import Progress, quiet
from ..errors import BadInput
from ..options import BuildOptions
from ..runners.base import Connection
from .build import compiled_model

DEFAULT_TRIALS = 200
DEFAULT_TIMEOUT_MIN = 10.0


def run_tune(opts: BuildOptions, trials: int = DEFAULT_TRIALS, timeout_min: float = DEFAULT_TIMEOUT_MIN,
             progress: Progress = quiet, refine: bool = False, connection: Connection | None = None):
    """Tune the model's kernels not yet in the target's database (every kernel with `refine`), measuring them
    here, under emulation, or on the board of a TVM RPC farm (`connection` with rpc and key); returns
    tuning.TuneResult (and writes it as tune.json in the database folder)."""
    import json
    from dataclasses import asdict

    from ..backends.tvm.tuning import check_board, load_tensor_intrinsics, tune

    if trials < 1 or timeout_min <= 0:
        raise BadInput(f"--trials must be at least 1 and --timeout positive (got {trials} and {timeout_min}).")
    board = None
    if connection is not None:
        if not connection.key:
            raise BadInput("--rpc needs --key, the key the board registered with the tracker.")
        board = (host_port(connection.rpc, "--rpc", "a TVM RPC tracker"), connection.key)
        check_board(*board, progress)
    progress("loading TVM's tensor intrinsics (MetaSchedule's schedule rules need them)")
    load_tensor_intrinsics()  # before the model's loading imports TensorFlow: much faster
    with tempfile.TemporaryDirectory(prefix="edgeyard-tune-") as workdir:
        model, target = compiled_model(replace(opts, backend="tvm"), Path(workdir), progress)
        result = tune(model, target, trials, timeout_min * 60, opts.tuning_db, progress, refine, board)
    atomic_write(Path(result.database) / "tune.json", json.dumps(asdict(result), indent=2) + "\n")
    return result
