"""What a runner is: a place a bundle runs (this machine, an emulator, a board over SSH or TVM RPC).

Every runner speaks the bundle protocol (toolchain/bundle.py): it writes the inputs, starts the
bundle's entry program with IN_DIR OUT_DIR SAMPLES WARMUP REPEAT, and reads outputs and timings.
Runners that reach a board (ssh, tvm-rpc) get a Connection and move the files themselves.
"""

import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import proc
from ..bundle import Entry, entry_of
from ..errors import BadInput, BuildError, output_tail
from ..hostenv import qemu_plugin, tools
from ..hostenv.tools import Tool
from ..target.profile import Target


@dataclass(frozen=True)
class Connection:
    """How to reach a real board: an SSH destination, or a TVM RPC tracker and the board's key there."""

    host: str | None = None  # SSH destination, [user@]address
    port: int | None = None  # SSH port; None: ssh's default (22, or ~/.ssh/config)
    identity: Path | None = None  # SSH private key; None: ssh's default keys and agent
    known_hosts: Path | None = None  # file holding the board's host key; None: ssh's (~/.ssh/known_hosts)
    rpc: str | None = None  # TVM RPC tracker, HOST:PORT
    key: str | None = None  # the board's device key at the tracker

    @property
    def runner(self) -> str:
        """The name of the runner this connection is for."""
        if bool(self.host) == bool(self.rpc):
            raise BadInput("give either --host (SSH) or --rpc with --key (TVM RPC tracker), not both.")
        return "ssh" if self.host else "tvm-rpc"


@dataclass(frozen=True)
class InstructionCount:
    """What a counting runner measured for one inference of sample 0."""

    instructions_per_inference: int
    # Where the runner counts by instruction class (qemu-system, harness firmware with its markers) and the
    # core has a cycle model (toolchain/target/cycle_model.py); None elsewhere.
    estimated_cycles_per_inference: int | None = None
    instruction_classes: dict[str, int] | None = None  # class -> instructions per inference
    cycle_model: dict | None = None  # the core, its cycles per class, the source and how far off it can be


@dataclass
class RunResult:
    outputs: list[np.ndarray]  # each (samples, *output shape)
    timings_ns: list[int]  # one per timed repeat; empty when repeat was 0
    emulated: bool  # wall time came from an emulator, not the device
    count: InstructionCount | None = None  # from runners that count instructions exactly
    # Each layer's mean share of a timed run (OUT_DIR/layers.txt, from bundles that profile their layers):
    # cycles on a board, instructions under an emulator that counts them.
    layer_counts: list[int] | None = None


@dataclass(frozen=True)
class RunnerCaps:
    """What a runner can do, declared once (like west's RunnerCaps; a misspelled field is a TypeError)."""

    remote: bool = False  # reaches a board through a Connection: connect() and execute(), not command()
    counts_instructions: bool = False  # count_instructions(): instructions per inference, the same run after run
    emulated: bool = False  # its wall time comes from an emulator, not the device
    timing_note: str | None = None  # what its latency figures are, when not time measured on the device
    # What a machine needs to run it, as a Dask worker resource (`dask worker --resources qemu=1`): a
    # scaled-out build for a target with this runner lands only on a worker that declares it.
    resource: str | None = None

    @property
    def latency_note(self) -> str | None:
        return self.timing_note or ("wall time under emulation, not device time" if self.emulated else None)


@dataclass(frozen=True)
class RunRequest:
    """One run of the bundle protocol: IN_DIR holds the inputs, OUT_DIR receives the outputs and timings."""

    target: Target
    bundle_dir: Path
    manifest: dict
    in_dir: Path
    out_dir: Path
    samples: int
    warmup: int
    repeat: int
    threads: int
    timeout_s: float
    # Environment of a run on this machine on top of the runner's (the model key's path for an encrypted bundle);
    # a board's own environment for a remote run.
    env: dict[str, str] = field(default_factory=dict)

    def first_sample(self) -> list[bytes]:
        """Sample 0 of each input file in IN_DIR: what instruction counting runs."""
        sizes = [math.prod(spec["shape"]) * np.dtype(spec["dtype"]).itemsize for spec in self.manifest["inputs"]]
        return [(self.in_dir / f"input{i}.bin").read_bytes()[:size] for i, size in enumerate(sizes)]


class Runner:
    """Base of every runner. A subclass sets `name` and `caps` and implements what its caps promise:
    command() for local runners, connect() and execute() for remote ones, count_instructions() when it
    counts. register() checks the promise (runners.check_caps), so a capability cannot be half-declared."""

    name: str
    caps: RunnerCaps

    def unavailable_reason(self, target: Target, entry: Entry) -> str | None:
        """None when this runner can run the entry for target; otherwise why not, in a few words."""
        raise NotImplementedError

    def command(self, target: Target, entry: Entry, threads: int) -> tuple[list[str], dict[str, str]]:
        """Local runners: the argv prefix (before the protocol arguments) and extra environment for the entry."""
        raise NotImplementedError

    def connect(self, connection: Connection) -> "Runner":
        """Remote runners: this runner bound to a board."""
        raise NotImplementedError

    def execute(self, request: RunRequest) -> None:
        """Remote runners: run the protocol on the board, reading IN_DIR here and leaving OUT_DIR's files here."""
        raise NotImplementedError

    def count_instructions(self, request: RunRequest) -> InstructionCount:
        """Counting runners: instructions per inference of sample 0, the same figure run after run."""
        raise NotImplementedError

    def tools(self, target: Target) -> list[Tool]:
        """What running target's bundles on this machine needs besides edgeyard's own packages (invoke doctor)."""
        return []


class QemuRunner(Runner):
    """A runner whose command starts the target's [emulator] command, a qemu binary, and counts instructions
    with the qemu counting plugin. A subclass sets `emulator_hint`: how to install its qemu binaries."""

    emulator_hint: str

    def emulator(self, target: Target) -> list[str]:
        """The target's emulator command, once its program is found (MissingTool with the hint otherwise)."""
        command = list(target.emulator["command"])
        proc.require(command[0], self.emulator_hint)
        return command

    def tools(self, target: Target) -> list[Tool]:
        if not target.emulator:
            return []
        program = target.emulator["command"][0]
        return [tools.program(program, self.emulator_hint, f"emulates the board ({self.name} runner)"),
                qemu_plugin.tool()]


def _implements(runner: Runner, method: str) -> bool:
    """Whether the runner's class (or a parent below Runner) defines `method`."""
    for klass in type(runner).__mro__:
        if klass is Runner:
            return False
        if method in klass.__dict__:
            return True
    return False


def check_caps(runner: Runner) -> Runner:
    """The runner implements exactly what its caps declare (TypeError otherwise: a bug, found at import)."""
    if not isinstance(runner.caps, RunnerCaps):
        raise TypeError(f"runner {runner.name}: caps must be a RunnerCaps, not {type(runner.caps).__name__}")
    promised = {"connect", "execute"} if runner.caps.remote else {"command"}
    promised |= {"count_instructions"} if runner.caps.counts_instructions else set()
    implemented = {m for m in ("command", "connect", "execute", "count_instructions") if _implements(runner, m)}
    if promised != implemented:
        raise TypeError(f"runner {runner.name}: its caps promise {sorted(promised)} "
                        f"but it implements {sorted(implemented)}")
    return runner


def run_bundle(runner: Runner, target: Target, bundle_dir: Path, manifest: dict, inputs: list[np.ndarray],
               warmup: int = 0, repeat: int = 0, threads: int = 1, timeout_s: float = 600,
               count_instructions: bool = False, env: dict[str, str] | None = None) -> RunResult:
    """Run `inputs` (each (samples, *shape)) through the bundle with `runner`; time sample 0 if repeat > 0,
    and count its instructions when asked and the runner can. `env`: RunRequest.env."""
    samples = inputs[0].shape[0]
    with tempfile.TemporaryDirectory(prefix="edgeyard-io-") as io_dir:
        in_dir, out_dir = Path(io_dir, "in"), Path(io_dir, "out")
        in_dir.mkdir()
        out_dir.mkdir()
        for i, (spec, batch) in enumerate(zip(manifest["inputs"], inputs)):
            np.ascontiguousarray(batch, dtype=spec["dtype"]).tofile(in_dir / f"input{i}.bin")
        request = RunRequest(target, bundle_dir, manifest, in_dir, out_dir, samples, warmup, repeat, threads, timeout_s,
                             env or {})
        if runner.caps.remote:
            runner.execute(request)
        else:
            _execute_here(runner, request)
        outputs = []
        for j, spec in enumerate(manifest["outputs"]):
            path = out_dir / f"output{j}.bin"
            shape = (samples, *spec["shape"])
            data = np.fromfile(path, dtype=spec["dtype"]) if path.exists() else np.zeros(0)
            if data.size != int(np.prod(shape)):
                raise BuildError(f"the {manifest['backend']} bundle wrote {data.size} values to output{j}.bin, "
                                 f"expected {int(np.prod(shape))} for shape {list(shape)}.")
            outputs.append(data.reshape(shape))
        timings_path = out_dir / "timings_ns.txt"
        timings = [int(line) for line in timings_path.read_text().split()] if repeat > 0 else []
        if repeat > 0 and len(timings) != repeat:
            raise BuildError(f"the {manifest['backend']} bundle reported {len(timings)} timings, expected {repeat}.")
        layers_path = out_dir / "layers.txt"
        layer_counts = [int(line) for line in layers_path.read_text().split()] if layers_path.exists() else None
        count = None
        if count_instructions and runner.caps.counts_instructions:
            count = runner.count_instructions(request)
    return RunResult(outputs, timings, runner.caps.emulated, count, layer_counts)


def _execute_here(runner: Runner, request: RunRequest) -> None:
    """Run the entry on this machine (natively or under an emulator) with the runner's command."""
    manifest, bundle_dir, timeout_s = request.manifest, request.bundle_dir, request.timeout_s
    argv, env = runner.command(request.target, entry_of(manifest), request.threads)
    argv = argv + [str(request.in_dir), str(request.out_dir), str(request.samples), str(request.warmup),
                   str(request.repeat)]
    try:
        result = proc.run(argv, cwd=bundle_dir, env={**os.environ, **env, **request.env}, timeout_s=timeout_s,
                          check=False)
    except proc.TimedOut:
        raise BuildError(f"the {manifest['backend']} bundle in {bundle_dir} did not finish within "
                         f"{timeout_s:.0f} s on runner {runner.name}.") from None
    if result.returncode != 0:
        raise BuildError(f"the {manifest['backend']} bundle in {bundle_dir} failed on runner {runner.name} "
                         f"(exit {result.returncode}): {output_tail(result.stdout, result.stderr)}")
