#!/usr/bin/env python3
"""Validate and time CUDA bundles on a machine with an NVIDIA GPU that has no edgeyard installed.

Two steps, so the GPU machine needs only python3 with numpy and the NVIDIA driver:

  here (edgeyard's environment): the bundles, their inputs and their reference outputs, in one folder
    python scripts/cuda_check.py prepare BUILD_DIR... --dest CHECK_DIR [--samples 32]
  there (copy CHECK_DIR; it holds this script too):
    python3 CHECK_DIR/cuda_check.py run CHECK_DIR --out RESULTS_DIR [--warmup 20 --runs 200]

BUILD_DIR is an `invoke build --target x86_64-cuda --out BUILD_DIR` folder. `prepare` computes the
inputs and reference outputs exactly as the build's validation does (toolchain.pipeline.validate.make_inputs,
the model's own framework; the default model's test split, else seeded random inputs) and the
tolerance of each output (toolchain.pipeline.validate rules). `run` runs each bundle's entry per the bundle
protocol (toolchain/bundle.py) from a copy with nothing else on the loader path, compares, and times
inference of sample 0 (REPEAT timed runs after WARMUP untimed ones, as the runner reports them). It
also records what the GPU machine resolves for the bundle's libraries (ldd), the GPU (nvidia-smi),
the device code in model.so (cuobjdump) and whether the GPU runs the SASS or JIT-compiles the PTX
(a second run with CUDA_DISABLE_PTX_JIT=1). RESULTS_DIR gets results.json, outputs.npz and log.txt;
the exit status is 0 when every bundle ran and validated.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHECK = "check.json"
LOG: list[str] = []


def log(line: str = "") -> None:
    print(line, flush=True)
    LOG.append(line)


# ---------------------------------------------------------------- prepare (edgeyard's environment)


def prepare(build_dirs: list[Path], dest: Path, samples: int) -> None:
    from toolchain.backends.tvm.cuda import fatbins
    from toolchain.model import load_model
    from toolchain.model.default import default_model
    from toolchain.model.info import TensorInfo
    from toolchain.model.reference import reference_name, reference_outputs
    from toolchain.pipeline import validate

    dest.mkdir(parents=True, exist_ok=True)
    default_path, default_data = default_model()
    for build_dir in build_dirs:
        report = json.loads((build_dir / "report.json").read_text())
        case = dest / build_dir.name
        if case.exists():
            shutil.rmtree(case)
        shutil.copytree(build_dir / "bundle", case / "bundle", symlinks=True)
        manifest = json.loads((case / "bundle" / "manifest.json").read_text())
        model_path = Path(report["model"]["path"])
        info = load_model(model_path)
        inputs = validate.make_inputs(info, samples, default_data if model_path == default_path else None)
        reference = reference_outputs(info, inputs.tensors)
        (case / "in").mkdir()
        for i, (spec, batch) in enumerate(zip(manifest["inputs"], inputs.tensors)):
            np.ascontiguousarray(batch, dtype=spec["dtype"]).tofile(case / "in" / f"input{i}.bin")
        for j, (spec, out) in enumerate(zip(manifest["outputs"], reference)):
            np.save(case / f"reference{j}.npy", np.ascontiguousarray(out, dtype=spec["dtype"]))
        if inputs.labels is not None:
            np.save(case / "labels.npy", inputs.labels)
        # TVM keeps the fatbin inside its own module blob, where cuobjdump does not look: a copy it can read.
        for k, fatbin in enumerate(fatbins((case / "bundle" / "model.so").read_bytes())):
            (case / f"model{k}.fatbin").write_bytes(fatbin)
        # The tolerance validate.compare applies to each output, read off a comparison of the reference with itself.
        specs = [TensorInfo(o["name"], tuple(o["shape"]), o["dtype"],
                            (o["quant"]["scale"], o["quant"]["zero_point"]) if o["quant"] else None)
                 for o in manifest["outputs"]]
        tolerances = validate.compare(reference, reference, specs, None, manifest.get("tolerance"))["outputs"]
        check = {
            "model": model_path.name, "target": manifest["target"], "tvm_target": manifest.get("tvm_target"),
            "cuda": manifest.get("cuda"), "samples": samples, "inputs": inputs.source,
            "reference": reference_name(info), "tolerances": tolerances,
        }
        (case / CHECK).write_text(json.dumps(check, indent=2) + "\n")
        print(f"{case}: {model_path.name}, {samples} samples ({inputs.source}), reference {reference_name(info)}")
    shutil.copy(Path(__file__), dest / Path(__file__).name)


# ---------------------------------------------------------------- run (the GPU machine: python3, numpy)


def _tool(name: str) -> str | None:
    return shutil.which(name) or next((str(p) for p in (Path("/usr/local/cuda/bin") / name,) if p.is_file()), None)


def _capture(argv: list[str], env: dict | None = None, cwd: Path | None = None, timeout: float = 120) -> dict:
    started = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout, check=False)
    except FileNotFoundError as err:
        return {"rc": None, "stdout": "", "stderr": str(err), "wall_s": 0.0}
    except subprocess.TimeoutExpired:
        return {"rc": None, "stdout": "", "stderr": f"timed out after {timeout} s", "wall_s": timeout}
    return {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr,
            "wall_s": round(time.perf_counter() - started, 3)}


def _gpu() -> dict:
    smi = _tool("nvidia-smi")
    if smi is None:
        return {"found": False, "why": "no nvidia-smi"}
    query = _capture([smi, "--query-gpu=name,driver_version,compute_cap,memory.total,clocks.max.sm",
                      "--format=csv,noheader"])
    full = _capture([smi])
    log("nvidia-smi:\n" + (full["stdout"] or full["stderr"]).rstrip())
    fields = [f.strip() for f in query["stdout"].splitlines()[0].split(",")] if query["rc"] == 0 and query["stdout"] else []
    if len(fields) < 3:
        return {"found": False, "why": (query["stderr"] or query["stdout"]).strip()[-300:]}
    keys = ("name", "driver", "compute_cap", "memory", "max_sm_clock")
    return {"found": True, **dict(zip(keys, fields))}


def _driver_library_path() -> str:
    """The LD_LIBRARY_PATH folders that hold the NVIDIA driver (libcuda.so.1), which the machine provides."""
    folders = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d and (Path(d) / "libcuda.so.1").exists()]
    return ":".join(folders)


def _clean_env(**extra: str) -> dict:
    """This environment with no loader path but the driver's: the bundle must carry every other library."""
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "LD_PRELOAD")}
    if _driver_library_path():
        env["LD_LIBRARY_PATH"] = _driver_library_path()
    return {**env, **extra}


def _run_entry(bundle: Path, manifest: dict, in_dir: Path, samples: int, warmup: int, repeat: int,
               **env: str) -> tuple[dict, Path]:
    out_dir = Path(tempfile.mkdtemp(prefix="cuda-check-out-"))
    argv = [str(bundle / a[2:]) if a.startswith("./") else a for a in manifest["entry"]["argv"]]
    result = _capture([*argv, str(in_dir), str(out_dir), str(samples), str(warmup), str(repeat)],
                      env=_clean_env(**manifest["entry"].get("env", {}), **env), cwd=bundle)
    return result, out_dir


def _first_sample(in_dir: Path, manifest: dict) -> Path:
    """A copy of IN_DIR with sample 0 alone, for runs of SAMPLES=1 (the runner wants exactly SAMPLES tensors)."""
    one = Path(tempfile.mkdtemp(prefix="cuda-check-in-"))
    for i, spec in enumerate(manifest["inputs"]):
        size = int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
        (one / f"input{i}.bin").write_bytes((in_dir / f"input{i}.bin").read_bytes()[:size])
    return one


def _execution_mode(device_code: list[str], compute_cap: str | None) -> str:
    """What the driver runs on a GPU of `compute_cap` ("9.0"): SASS built for it, compatible SASS, or JIT'd PTX."""
    if not compute_cap:
        return "unknown (no GPU)"
    major, minor = (int(x) for x in compute_cap.split("."))
    sass = [int(re.sub(r"\D", "", c)) for c in device_code if c.startswith("sm_")]
    ptx = [int(re.sub(r"\D", "", c)) for c in device_code if c.startswith("compute_")]
    if major * 10 + minor in sass:
        return f"SASS sm_{major}{minor}"
    # SASS runs on GPUs of the same major version and an equal or higher minor one.
    compatible = [s for s in sass if s // 10 == major and s % 10 <= minor]
    if compatible:
        return f"SASS sm_{max(compatible)} (binary compatible)"
    if any(p <= major * 10 + minor for p in ptx):
        return f"PTX compute_{max(p for p in ptx if p <= major * 10 + minor)} JIT-compiled by the driver"
    return "none: no device code for this GPU"


def _latency(timings_ns: list[int]) -> dict | None:
    if not timings_ns:
        return None
    ms = np.asarray(timings_ns, dtype=np.float64) / 1e6
    return {"median": float(np.median(ms)), "p90": float(np.percentile(ms, 90)), "min": float(ms.min()),
            "max": float(ms.max()), "runs": len(timings_ns)}


def _check_case(case: Path, gpu: dict, warmup: int, runs: int, outputs: dict) -> dict:
    check = json.loads((case / CHECK).read_text())
    bundle = case / "bundle"
    manifest = json.loads((bundle / "manifest.json").read_text())
    samples = check["samples"]
    result = {"case": case.name, "model": check["model"], "tvm_target": check["tvm_target"],
              "device_code": (check.get("cuda") or {}).get("device_code", []), "samples": samples,
              "inputs": check["inputs"], "reference": check["reference"]}
    log(f"\n=== {case.name}: {check['model']} for {check['target']} "
        f"({(check['tvm_target'] or {}).get('arch')}, device code {result['device_code']})")

    ldd = _tool("ldd")
    result["ldd"] = {}
    for name in (*manifest["entry"]["argv"][:1], "./model.so"):
        path = bundle / name.removeprefix("./")
        text = _capture([ldd, str(path)], env=_clean_env())["stdout"] if ldd else "no ldd"
        result["ldd"][path.name] = text.strip()
        log(f"ldd {path.name}:\n{text.rstrip()}")
    result["missing_libraries"] = sorted({line.split()[0] for text in result["ldd"].values()
                                          for line in text.splitlines() if "not found" in line})

    cuobjdump = _tool("cuobjdump")
    if cuobjdump:
        result["cuobjdump"] = ""
        for fatbin in sorted(case.glob("model*.fatbin")):  # model.so's fatbins, as prepare copied them out
            listed = _capture([cuobjdump, "--list-elf", "--list-ptx", str(fatbin)])
            result["cuobjdump"] += (listed["stdout"] + listed["stderr"]).strip() + "\n"
        log(f"cuobjdump --list-elf --list-ptx on model.so's fatbin:\n{result['cuobjdump'].rstrip()}")
    result["execution_mode"] = _execution_mode(result["device_code"], gpu.get("compute_cap"))
    log(f"device code for this GPU ({gpu.get('compute_cap')}): {result['execution_mode']}")

    # Validation and timing in one process, per the bundle protocol.
    run, out_dir = _run_entry(bundle, manifest, case / "in", samples, warmup, runs)
    result["run"] = {"rc": run["rc"], "wall_s": run["wall_s"], "stderr_tail": run["stderr"].strip()[-800:]}
    log(f"run ({samples} samples, {warmup} warm-up, {runs} timed): exit {run['rc']} in {run['wall_s']} s"
        + (f"\n{run['stderr'].strip()[-800:]}" if run["rc"] != 0 else ""))
    result["passed"] = False
    if run["rc"] == 0:
        per_output, passed, first, first_ref = [], True, None, None
        for j, (spec, tol) in enumerate(zip(manifest["outputs"], check["tolerances"])):
            got = np.fromfile(out_dir / f"output{j}.bin", dtype=spec["dtype"]).reshape((samples, *spec["shape"]))
            want = np.load(case / f"reference{j}.npy")
            outputs[f"{case.name}.output{j}"] = got
            error = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64)), initial=0))
            ok = bool(error <= tol["tolerance"] and np.all(np.isfinite(got.astype(np.float64))))
            passed &= ok
            per_output.append({"name": spec["name"], "max_abs_error": error, "tolerance": tol["tolerance"],
                               "unit": tol["unit"], "passed": ok})
            if j == 0:
                first, first_ref = got.reshape(samples, -1), want.reshape(samples, -1)
        validation = {"passed": passed, "max_abs_error": max(o["max_abs_error"] for o in per_output),
                      "outputs": per_output}
        if first.shape[1] > 1:
            validation["top1_agreement"] = float(np.mean(first.argmax(1) == first_ref.argmax(1)))
            if (case / "labels.npy").is_file():
                labels = np.load(case / "labels.npy").reshape(-1)
                validation["accuracy"] = float(np.mean(first.argmax(1) == labels))
        result["validation"] = validation
        timings = [int(t) for t in (out_dir / "timings_ns.txt").read_text().split()] if runs else []
        result["latency_ms"] = _latency(timings)
        result["passed"] = passed
        log(f"validation: {'passed' if passed else 'FAILED'}, max abs error {validation['max_abs_error']:.3g} "
            f"(tolerance {min(o['tolerance'] for o in per_output):.3g}), "
            f"top-1 agreement {validation.get('top1_agreement')}")
        if result["latency_ms"]:
            lat = result["latency_ms"]
            log(f"latency: median {lat['median']:.4f} ms, p90 {lat['p90']:.4f} ms, min {lat['min']:.4f} ms "
                f"over {lat['runs']} runs")
        # The same timing in a second process: how much the figure moves between runs.
        one = _first_sample(case / "in", manifest)
        again, again_dir = _run_entry(bundle, manifest, one, 1, warmup, runs)
        if again["rc"] == 0:
            result["latency_ms_second_process"] = _latency(
                [int(t) for t in (again_dir / "timings_ns.txt").read_text().split()])
            log(f"second process: median {result['latency_ms_second_process']['median']:.4f} ms")
        else:
            log(f"second process: exit {again['rc']}: {again['stderr'].strip()[-300:]}")
        shutil.rmtree(again_dir, ignore_errors=True)
        # Start-up (load, CUDA context, module load) without the driver's JIT cache, then with it, and whether
        # the GPU can run the bundle without JIT-compiling PTX at all.
        for label, env in (("no_jit_cache", {"CUDA_CACHE_DISABLE": "1"}), ("jit_cache", {}),
                           ("ptx_jit_disabled", {"CUDA_DISABLE_PTX_JIT": "1"})):
            probe, probe_dir = _run_entry(bundle, manifest, one, 1, 0, 0, **env)
            result[f"startup_{label}"] = {"rc": probe["rc"], "wall_s": probe["wall_s"],
                                          "stderr_tail": probe["stderr"].strip()[-300:]}
            log(f"1 sample, {label}: exit {probe['rc']} in {probe['wall_s']} s"
                + (f": {probe['stderr'].strip()[-300:]}" if probe["rc"] != 0 else ""))
            shutil.rmtree(probe_dir, ignore_errors=True)
        result["runs_without_ptx_jit"] = result["startup_ptx_jit_disabled"]["rc"] == 0
        shutil.rmtree(one, ignore_errors=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    return result


def run(check_dir: Path, out: Path, warmup: int, runs: int) -> int:
    out.mkdir(parents=True, exist_ok=True)
    results = {"host": os.uname().nodename, "python": sys.version.split()[0], "numpy": np.__version__,
               "warmup": warmup, "runs": runs, "gpu": _gpu(), "cases": []}
    log(f"GPU: {results['gpu']}")
    ldconfig = _capture(["ldconfig", "-p"])
    results["system_cuda_libraries"] = sorted({line.split()[0] for line in ldconfig["stdout"].splitlines()
                                               if re.match(r"\s*lib(cuda|cudart)\.so", line)})
    log(f"CUDA libraries the system loader knows: {results['system_cuda_libraries']}")
    results["ld_library_path"] = {"here": os.environ.get("LD_LIBRARY_PATH", ""), "kept": _driver_library_path()}
    log(f"LD_LIBRARY_PATH here: {results['ld_library_path']['here']!r}; the bundles run with "
        f"{results['ld_library_path']['kept']!r} (the driver's folders only)")
    outputs: dict[str, np.ndarray] = {}
    for case in sorted(p for p in check_dir.iterdir() if (p / CHECK).is_file()):
        try:
            results["cases"].append(_check_case(case, results["gpu"], warmup, runs, outputs))
        except Exception as err:  # noqa: BLE001 (one broken case must not lose the others' results)
            log(f"{case.name}: {type(err).__name__}: {err}")
            results["cases"].append({"case": case.name, "passed": False, "error": f"{type(err).__name__}: {err}"})
    results["passed"] = bool(results["cases"]) and all(c["passed"] for c in results["cases"])
    log("\n" + "\n".join(f"{c['case']}: {'passed' if c['passed'] else 'FAILED'}"
                         + (f", max abs error {c['validation']['max_abs_error']:.3g}" if "validation" in c else "")
                         + (f", median {c['latency_ms']['median']:.4f} ms, p90 {c['latency_ms']['p90']:.4f} ms"
                            if c.get("latency_ms") else "") for c in results["cases"]))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    if outputs:
        np.savez(out / "outputs.npz", **outputs)
    (out / "log.txt").write_text("\n".join(LOG) + "\n")
    return 0 if results["passed"] else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="copy bundles with their inputs and reference outputs (needs edgeyard)")
    p.add_argument("build_dirs", nargs="+", type=Path)
    p.add_argument("--dest", type=Path, required=True)
    p.add_argument("--samples", type=int, default=32)
    r = sub.add_parser("run", help="run, validate and time the prepared bundles (needs python3, numpy, a GPU)")
    r.add_argument("check_dir", type=Path)
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--warmup", type=int, default=20)
    r.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.build_dirs, args.dest, args.samples)
        return 0
    return run(args.check_dir.resolve(), args.out, args.warmup, args.runs)


if __name__ == "__main__":
    sys.exit(main())
