"""invoke matrix (plan, shards, merge, size check), the GitHub workflows, and builds scaled out over a local
process pool and a real Dask cluster on 127.0.0.1 (scheduler and workers as subprocesses)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from toolchain.errors import BadInput
from toolchain.options import parse_growth, parse_shard, scheduler_address
from toolchain.pipeline import jobs, matrix
from toolchain.pipeline.coverage import plan, run_coverage

from conftest import PROJECT_ROOT, free_port, invoke

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
TARGETS = ["host", "rpi4"]


def table(coverage: dict) -> dict:
    """What a coverage table says, whoever built it and wherever: each cell's status, backend and text. On the
    host auto ships the lower latency, which noise may tip between two close backends: there, the status only."""
    return {"targets": coverage["targets"], "counts": (coverage["builds"], coverage["validated"], coverage["failed"]),
            "cells": {(row["model"], name): (cell["status"],) if name == "host" else
                      (cell["status"], cell["backend"], cell["text"])
                      for row in coverage["rows"] for name, cell in row["cells"].items()}}


# ---- the plan and its shards (fast: nothing is built) ----

@pytest.fixture
def model_names(tmp_path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("a.tflite", "b.onnx", "c.keras", "d.tflite", "e.onnx"):
        (folder / name).write_bytes(b"")  # the plan only lists the folder
    return folder


@pytest.mark.fast
@pytest.mark.parametrize("backends", [["auto"], ["tvm", "litert"]])
def test_shards_partition_the_plan_exactly(model_names, backends):
    entries = plan(model_names, ["host", "rpi4", "corstone-300"], backends)
    assert entries == plan(model_names, ["host", "rpi4", "corstone-300"], backends)  # deterministic
    assert len(entries) == len(set(entries)) == 5 * (3 if backends == ["auto"] else 5)  # corstone-300: tvm only
    for count in range(1, len(entries) + 2):
        shards = [matrix.shard_entries(entries, index, count) for index in range(1, count + 1)]
        assert sorted(entry for shard in shards for entry in shard) == sorted(entries)  # none twice, none missing
        assert max(map(len, shards)) - min(map(len, shards)) <= 1
    planned = matrix.plan_json(entries, 4)
    assert [shard["shard"] for shard in planned["include"]] == ["1/4", "2/4", "3/4", "4/4"]
    assert planned["include"][1]["entries"] == [e.to_json() for e in matrix.shard_entries(entries, 2, 4)]
    assert set(planned["include"][0]["entries"][0]) == {"model", "target", "backend"}
    assert len(matrix.plan_json(entries[:2], 4)["include"]) == 2  # never a shard with nothing to build


@pytest.mark.fast
def test_bad_matrix_options_are_one_sentence_each(model_names):
    with pytest.raises(BadInput, match="no target of corstone-300 is served by litert"):
        plan(model_names, ["corstone-300"], ["litert"])
    with pytest.raises(BadInput, match="nosuch"):
        plan(model_names, ["host"], ["nosuch"])
    with pytest.raises(BadInput, match="--targets names host twice"):
        plan(model_names, ["host", "rpi4", "host"], ["auto"])
    for text in ("0/2", "3/2", "a/b", "2"):
        with pytest.raises(BadInput, match=r"--shard .* is not i/N"):
            parse_shard(text)
    assert parse_shard("2/4") == (2, 4) and parse_growth("5%") == 0.05 and parse_growth("0.1") == 0.1
    for text in ("-1%", "five", "nan"):
        with pytest.raises(BadInput, match="--max-growth"):
            parse_growth(text)
    assert scheduler_address("tcp://10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    for text in ("10.0.0.5:8786", "tcp://:8786", "tcp://host"):
        with pytest.raises(BadInput, match="--scheduler"):
            scheduler_address(text)
    result = invoke("matrix", "--plan", "--shard", "1/2")
    assert result.returncode == 2 and "give exactly one of --plan, --shard i/N and --merge DIR" in result.stderr


@pytest.mark.fast
def test_size_check_flags_growth_beyond_the_threshold(tmp_path):
    def coverage(flash, ram):
        return {"rows": [{"model": "kws.tflite", "cells": {
            "nucleo-l4r5zi": {"flash_bytes": flash, "ram_bytes": ram}, "host": {"flash_bytes": None, "ram_bytes": None}}}]}

    baseline = tmp_path / "coverage.json"
    baseline.write_text(json.dumps(coverage(100_000, 50_000)))
    check = matrix.size_check(coverage(106_000, 50_500), baseline, 0.05)
    assert check["regressions"] == 1 and len(check["compared"]) == 2  # host has no figures: not compared
    flash, ram = check["compared"]
    assert (flash["size"], flash["growth"], flash["regressed"]) == ("flash_bytes", 0.06, True)
    assert (ram["growth"], ram["regressed"]) == (0.01, False)
    assert matrix.size_check(coverage(106_000, 50_500), baseline, 0.10)["regressions"] == 0
    assert "1 of 2 flash/RAM figures grew by more than 5.0%" in matrix.size_check_text(check)
    baseline.write_text("[1, 2]")
    with pytest.raises(BadInput, match="is not a coverage.json"):
        matrix.size_check(coverage(1, 1), baseline, 0.05)


# ---- the workflows ----

def _workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


@pytest.mark.fast
def test_actionlint_passes_on_every_workflow(tmp_path):
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["cross.yml", "test.yml"]
    result = subprocess.run([str(BIN / "actionlint"), *map(str, files)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    broken = tmp_path / "cross.yml"  # actionlint can fail: a typo in an expression
    broken.write_text((WORKFLOWS / "cross.yml").read_text().replace("needs.plan.outputs.matrix", "needs.plan.output.matrix"))
    result = subprocess.run([str(BIN / "actionlint"), str(broken)], capture_output=True, text=True)
    assert result.returncode == 1 and "property \"output\" is not defined" in result.stdout, result.stdout


@pytest.mark.fast
def test_actions_are_pinned_by_commit_and_shards_never_fail_fast():
    for name in ("cross.yml", "test.yml"):
        for job in _workflow(name)["jobs"].values():
            for step in job.get("steps", []):
                if "uses" in step:
                    action, _, ref = step["uses"].partition("@")
                    assert len(ref) == 40 and all(c in "0123456789abcdef" for c in ref), step["uses"]
    assert _workflow("cross.yml")["jobs"]["shard"]["strategy"]["fail-fast"] is False


@pytest.mark.fast
def test_the_workflow_builds_the_matrix_invoke_matrix_plans():
    workflow = _workflow("cross.yml")
    args = workflow["env"]["MATRIX_ARGS"].split()
    jobs_ = workflow["jobs"]
    plan_run = next(step["run"] for step in jobs_["plan"]["steps"] if step.get("id") == "plan")
    assert 'invoke matrix --plan --shards "$SHARDS" $MATRIX_ARGS)" >> "$GITHUB_OUTPUT"' in plan_run
    assert jobs_["plan"]["outputs"]["matrix"] == "${{ steps.plan.outputs.matrix }}"
    assert jobs_["shard"]["strategy"]["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    build = next(step for step in jobs_["shard"]["steps"] if step.get("name") == "build and validate")
    assert build["env"]["SHARD"] == "${{ matrix.shard }}"
    assert 'invoke matrix --shard "$SHARD" $MATRIX_ARGS --out build/shard' in build["run"]
    merge_run = next(step["run"] for step in jobs_["merge"]["steps"] if step.get("name") == "merge")
    assert "invoke matrix --merge shards --out build/matrix" in merge_run

    # What the plan step prints, run here with the same arguments: the shard jobs' matrix.
    result = invoke("matrix", "--plan", "--shards", workflow["env"]["SHARDS"], *args)
    assert result.returncode == 0, result.stderr
    planned = json.loads(result.stdout)
    assert [shard["shard"] for shard in planned["include"]] == ["1/4", "2/4", "3/4", "4/4"]
    targets = args[args.index("--targets") + 1].split(",")
    entries = plan(None, targets, args[args.index("--backends") + 1].split(","))
    assert sorted(json.dumps(e, sort_keys=True) for shard in planned["include"] for e in shard["entries"]) == \
        sorted(json.dumps(e.to_json(), sort_keys=True) for e in entries)
    assert {e.target for e in entries} == set(targets)


# ---- the local pool ----

def _square_or_die_once(number: int, marker: str) -> int:
    """A job whose process dies the first time it is given 3 (as a worker killed mid-build would)."""
    if number == 3 and not os.path.exists(marker):
        Path(marker).write_text("died once")
        os._exit(9)
    time.sleep(0.2)
    return number * number


@pytest.mark.fast
def test_local_pool_runs_the_jobs_of_a_dead_process_again(tmp_path):
    marker = str(tmp_path / "died")
    work = [jobs.Job(f"square {n}", _square_or_die_once, (n, marker)) for n in range(6)]
    done = jobs.run_jobs(work, workers=2)
    assert [d.value for d in done] == [n * n for n in range(6)] and Path(marker).is_file()
    assert {d.worker for d in done} == {jobs.LOCAL}
    with pytest.raises(BadInput, match="--jobs must be at least 1"):
        jobs.run_jobs(work, workers=0)


# ---- end to end: three small models on host and rpi4 ----

@pytest.fixture(scope="module")
def models(tmp_path_factory, tiny_tflite, hybrid_tflite, tiny_onnx) -> Path:
    folder = tmp_path_factory.mktemp("matrix-models")
    for model in (tiny_tflite, hybrid_tflite, tiny_onnx):
        shutil.copy(model, folder / model.name)
    return folder


@pytest.fixture(scope="module")
def local_coverage(models, tmp_path_factory, aarch64_runtime) -> dict:
    """The single-machine coverage every scaled-out table must equal."""
    result = run_coverage(models, TARGETS, out=tmp_path_factory.mktemp("local") / "coverage", samples=4, workers=1)
    assert result["validated"] == 6, result
    return result


def test_merged_shards_equal_a_single_machine_coverage(models, local_coverage, tmp_path):
    args = ["--models", str(models), "--targets", ",".join(TARGETS), "--samples", "4"]
    first = matrix.run_shard(models, TARGETS, ["auto"], (1, 2), tmp_path / "shard-1", samples=4, workers=1)
    second = invoke("matrix", "--shard", "2/2", *args, "--out", str(tmp_path / "shard-2"), "--jobs", "1")
    assert second.returncode == 0, second.stderr
    assert first["builds"] + json.loads((tmp_path / "shard-2" / "coverage.json").read_text())["builds"] == 6

    merged = invoke("matrix", "--merge", str(tmp_path), "--out", str(tmp_path / "merged"))  # a folder of shard folders
    assert merged.returncode == 0, merged.stderr
    assert "6 of 6 builds validated, 0 failed" in merged.stdout
    coverage = json.loads((tmp_path / "merged" / "coverage.json").read_text())
    assert table(coverage) == table(local_coverage)
    markdown = (tmp_path / "merged" / "coverage.md").read_text()
    assert (tmp_path / "merged" / "coverage.md").read_text().count("| `") == 3 and "## Shards merged" in markdown

    # One shard's folder alone: the other half of the plan is missing, and says so.
    alone = invoke("matrix", "--merge", str(tmp_path / "shard-1"), "--out", str(tmp_path / "alone"))
    assert alone.returncode == 1 and "3 of 6 builds failed" in alone.stderr
    assert "no shard folder holds this entry (shards merged: 1/2)" in (tmp_path / "alone" / "coverage.md").read_text()

    # Size tracking: a build whose report says its flash grew 10% against the baseline regresses at 5%, not at 20%.
    reported = tmp_path / "shard-1" / "host" / "tiny_cnn.tflite" / "auto" / "report.json"
    report = json.loads(reported.read_text())
    reported.write_text(json.dumps({**report, "memory": {"flash_bytes": 11_000, "ram_bytes": 4_000}}))
    baseline = json.loads((tmp_path / "merged" / "coverage.json").read_text())
    baseline["rows"][1]["cells"]["host"].update(flash_bytes=10_000, ram_bytes=4_000)
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    merge_args = ["matrix", "--merge", str(tmp_path / "shard-1"), "--merge", str(tmp_path / "shard-2"),
                  "--out", str(tmp_path / "sized"), "--baseline", str(tmp_path / "baseline.json")]
    grown = invoke(*merge_args)
    assert grown.returncode == 1 and "1 flash/RAM figures grew by more than 5.0%" in grown.stderr
    assert "| `tiny_cnn.tflite` | host | flash_bytes | 10000 | 11000 | +10.0% | **regressed** |" in \
        (tmp_path / "sized" / "coverage.md").read_text()
    assert invoke(*merge_args, "--max-growth", "20%").returncode == 0


# ---- a real Dask cluster on 127.0.0.1 ----

class Cluster:
    """`dask scheduler` and two `dask worker`s as subprocesses, each in its own session (killable as a group)."""

    def __init__(self, log_dir: Path):
        self.address = f"tcp://127.0.0.1:{free_port()}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT), os.environ.get("PYTHONPATH", "")])}
        self.processes, self.logs = {}, []
        self._start("scheduler", [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port",
                                  self.address.rsplit(":", 1)[1], "--no-dashboard"], env, log_dir)
        worker = [str(BIN / "dask"), "worker", self.address, "--nthreads", "1", "--no-dashboard",
                  "--host", "127.0.0.1", "--local-directory", str(log_dir)]
        self._start("qemu", [*worker, "--name", "qemu", "--resources", "qemu=1"], env, log_dir)
        self._start("plain", [*worker, "--name", "plain"], env, log_dir)
        from distributed import Client

        with Client(self.address, timeout=60) as client:
            client.wait_for_workers(2, timeout=60)
            self.workers = {info["name"]: address for address, info in client.scheduler_info()["workers"].items()}

    def _start(self, name, argv, env, log_dir):
        log = open(log_dir / f"{name}.log", "w")
        self.logs.append(log)
        self.processes[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True)

    def kill(self, name: str) -> None:
        os.killpg(self.processes[name].pid, signal.SIGKILL)
        self.processes[name].wait()

    def close(self) -> None:
        for name in ("plain", "qemu", "scheduler"):
            if self.processes[name].poll() is None:
                self.kill(name)
        for log in self.logs:
            log.close()


@pytest.fixture
def cluster(tmp_path):
    started = Cluster(tmp_path)
    yield started
    started.close()


def test_dask_coverage_runs_rpi4_builds_on_the_qemu_worker(models, local_coverage, cluster, tmp_path):
    out = tmp_path / "coverage"
    result = invoke("coverage", "--models", str(models), "--targets", ",".join(TARGETS), "--samples", "4",
                    "--out", str(out), "--scheduler", cluster.address)
    assert result.returncode == 0, result.stderr
    coverage = json.loads((out / "coverage.json").read_text())
    assert table(coverage) == table(local_coverage)
    cells = [(name, cell) for row in coverage["rows"] for name, cell in row["cells"].items()]
    assert {cell["worker"] for name, cell in cells if name == "rpi4"} == {cluster.workers["qemu"]}
    assert {cell["worker"] for _, cell in cells} <= set(cluster.workers.values())
    for _, cell in cells:  # each build came back as a folder here, its report naming it
        report = json.loads((Path(cell["out_dir"]) / "report.json").read_text())
        assert report["out_dir"] == cell["out_dir"] and Path(cell["out_dir"]).is_relative_to(out)
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]

    again = run_coverage(models, TARGETS, out=out, samples=4, scheduler=cluster.address)  # cached here: no task sent
    assert all(cell["cached"] and cell["worker"] == jobs.LOCAL for row in again["rows"] for cell in row["cells"].values())

    with pytest.raises(BadInput, match="declares the resource 'cuda'"):
        run_coverage(models, ["x86_64-cuda"], backend="tvm", out=tmp_path / "cuda", samples=4,
                     scheduler=cluster.address)
    unreachable = invoke("coverage", "--models", str(models), "--scheduler", f"tcp://127.0.0.1:{free_port()}")
    assert unreachable.returncode == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:" in unreachable.stderr


@pytest.mark.slow
def test_a_worker_killed_mid_build_loses_nothing(models, local_coverage, cluster, tmp_path):
    from distributed import Client

    out = tmp_path / "coverage"
    outcome = {}
    run = threading.Thread(target=lambda: outcome.update(result=run_coverage(
        models, TARGETS, out=out, samples=4, scheduler=cluster.address)))
    run.start()
    with Client(cluster.address, timeout=30) as watcher:
        deadline, lost = time.monotonic() + 120, []
        while not lost and time.monotonic() < deadline:  # a build in progress on the plain worker, a second in
            if watcher.processing().get(cluster.workers["plain"]):
                time.sleep(1)
                lost = watcher.processing().get(cluster.workers["plain"], [])
            else:
                time.sleep(0.2)
        assert lost, "the plain worker never had a build in progress"
        cluster.kill("plain")
    run.join(timeout=600)
    coverage = outcome["result"]
    assert table(coverage) == table(local_coverage)
    cells = {(row["model"], name): cell for row in coverage["rows"] for name, cell in row["cells"].items()}
    for key in lost:  # edgeyard-<run>-<index>-<model> for <target> (<backend>)
        model, _, target = str(key).split("-", 3)[3].rsplit(" (", 1)[0].partition(" for ")
        assert cells[(model, target)]["worker"] == cluster.workers["qemu"], key  # run again on the other worker
    assert {cell["worker"] for (_, target), cell in cells.items() if target == "rpi4"} == {cluster.workers["qemu"]}
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]
