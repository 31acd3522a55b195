"""Timing built bundles again, several side by side with their runs interleaved in rounds so that a noisy
machine slows them all alike: `invoke bench` (bench.py) and --backend auto's latency measurement (build.py)."""

from dataclasses import dataclass, field
from pathlib import Path

from .. import encryption, runners
from ..bundle import BUNDLE, entry_of, read_manifest
from ..console import Progress
from ..errors import BuildError
from ..model.info import ModelInfo, TensorInfo
from ..target.profile import Target
from . import stats, validate

NO_RUNNER = "no runner of the target is available"


def _probe_inputs(manifest: dict, bundle_dir: Path) -> list:
    """One seeded random sample for timing, shaped from the bundle's own manifest (no model loading)."""
    specs = [TensorInfo(t["name"], tuple(t["shape"]), t["dtype"]) for t in manifest["inputs"]]
    probe = ModelInfo(path=bundle_dir, format=manifest["backend"], sha256="", inputs=specs, outputs=[])
    return validate.make_inputs(probe, samples=1).tensors


@dataclass
class Timed:
    """A built bundle (its build folder) ready to be timed, and the timings gathered so far."""

    out_dir: Path
    runner: runners.Runner
    manifest: dict
    inputs: list
    env: dict = field(default_factory=dict)  # RunRequest.env: where the model key is, for an encrypted bundle
    timings_ns: list = field(default_factory=list)
    count: runners.InstructionCount | None = None

    @classmethod
    def prepare(cls, out_dir: Path, target: Target, connection: runners.Connection | None = None,
                model_key: Path | None = None) -> "Timed":
        bundle_dir = out_dir / BUNDLE
        manifest = read_manifest(bundle_dir)
        runner, why = runners.select(target, entry_of(manifest), connection)
        if runner is None:
            why = why or manifest.get("not_run", NO_RUNNER)
            raise BuildError(f"cannot benchmark the {manifest['backend']} bundle for {target.name}: {why}.")
        return cls(out_dir, runner, manifest, _probe_inputs(manifest, bundle_dir), encryption.runner_env(model_key))

    def run(self, target: Target, warmup: int, runs: int, threads: int, count_instructions: bool) -> None:
        result = runners.run_bundle(self.runner, target, self.out_dir / BUNDLE, self.manifest, self.inputs,
                                    warmup, runs, threads, count_instructions=count_instructions, env=self.env)
        self.timings_ns += result.timings_ns
        self.count = result.count if count_instructions else self.count

    def section(self, warmup: int, threads: int) -> dict:
        """The report's `bench` section from the runs so far."""
        return stats.bench_section(self.runner, self.timings_ns, warmup, threads, self.count)


def interleaved(timed: list[Timed], target: Target, warmup: int, runs: int, rounds: int, threads: int,
                progress: Progress, count_instructions: bool = True) -> None:
    """At least `runs` timed runs of each bundle, in `rounds` rounds of each bundle in turn; instructions are
    counted in the first round (where the runner counts them and count_instructions says so). Each round starts
    one bundle further on: on this VM the same binary timed 25% slower in the last place of every round than in
    the second, and rotating gives every bundle each place alike."""
    per_round = -(-runs // rounds)  # ceiling: at least `runs` in all
    for round_index in range(rounds):
        start = round_index % len(timed) if timed else 0
        for item in timed[start:] + timed[:start]:
            # The folder names the variant (tvm-untuned beside tvm in bench --backend all).
            progress(f"round {round_index + 1}/{rounds}: {per_round} runs of {item.out_dir.name}")
            item.run(target, warmup, per_round, threads, count_instructions=count_instructions and round_index == 0)
