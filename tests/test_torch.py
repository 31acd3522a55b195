"""PyTorch models in: torch.export programs (.pt2) and TorchScript (.pt), read, inspected, built for the host and
the emulated Raspberry Pi 4 (TVM directly from the exported program, ONNX Runtime through ONNX, ExecuTorch's C++
runner) and validated against PyTorch itself; pickled modules and damaged archives refused with exit 2. Keras
models reach executorch as torch.export programs (Keras on PyTorch)."""

import json
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import BadInput
from toolchain.model import load_model
from toolchain.pipeline.build import BuildOptions, build

from conftest import elf_machine, invoke, run_protocol

EM_AARCH64 = 183


def _seeded_modules():
    """(a CNN with batch norm, a model with a residual and a concatenation), their weights seeded, batch norm with
    running statistics of its own (an untouched one is the identity)."""
    import torch
    from torch import nn

    torch.manual_seed(3)

    class SmallCnn(nn.Module):  # torchvision's conv-bn-relu blocks, scaled down
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1),
            )
            self.classifier = nn.Linear(16, 5)

        def forward(self, image):
            return self.classifier(torch.flatten(self.features(image), 1))

    class ResidualConcat(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(1, 6, 3, padding=1)
            self.branch = nn.Conv2d(6, 6, 3, padding=1)
            self.side = nn.Conv2d(6, 4, 1)
            self.head = nn.Linear(10 * 8 * 8, 3)

        def forward(self, x):
            stem = torch.relu(self.stem(x))
            residual = torch.relu(self.branch(stem)) + stem
            joined = torch.cat([residual, self.side(stem)], dim=1)
            return self.head(joined.flatten(1))

    cnn = SmallCnn()
    for module in cnn.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    return cnn.eval(), ResidualConcat().eval()


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory) -> dict[str, Path]:
    """cnn.pt2 and residual.pt2 (torch.export.save), cnn.pt (torch.jit.save), pickled.pt (torch.save of a module)."""
    import torch

    folder = tmp_path_factory.mktemp("torch")
    cnn, residual = _seeded_modules()
    paths = {name: folder / name for name in ("cnn.pt2", "residual.pt2", "cnn.pt", "pickled.pt")}
    torch.export.save(torch.export.export(cnn, (torch.zeros(1, 3, 16, 16),)), paths["cnn.pt2"])
    torch.export.save(torch.export.export(residual, (torch.zeros(1, 1, 8, 8),)), paths["residual.pt2"])
    with warnings.catch_warnings():  # TorchScript is deprecated, and still what many models ship as
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(cnn), paths["cnn.pt"])
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 2)), paths["pickled.pt"])  # a whole module, pickled
    return paths


def test_exported_program_inspected(torch_models):
    info = load_model(torch_models["cnn.pt2"])
    assert info.format == "torch-export"
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [("image", (1, 3, 16, 16), "float32")]
    assert [(t.shape, t.dtype) for t in info.outputs] == [((1, 5), "float32")]
    assert info.ops["aten.conv2d"] == 2 and info.ops["aten.batch_norm"] == 2 and info.ops["aten.linear"] == 1
    # conv 16x16x8 outputs x 27, conv 8x8x16 outputs x 72, linear 5 x 16
    assert info.macs == 16 * 16 * 8 * 27 + 8 * 8 * 16 * 72 + 5 * 16
    # weights (216 + 1152 + 80 + 5), batch norm (4 x 8 + 4 x 16) and its two num_batches_tracked counters
    assert info.params == 216 + 1152 + 85 + 4 * 24 + 2


def test_torchscript_needs_and_takes_input_shapes(torch_models):
    with pytest.raises(BadInput, match=r"records no input shapes; give them with --input-shape image:"):
        load_model(torch_models["cnn.pt"])
    info = load_model(torch_models["cnn.pt"], {"image": (2, 3, 16, 16)})
    assert info.format == "torchscript"
    assert [t.shape for t in info.outputs] == [(2, 5)]
    assert info.ops["aten::conv2d"] == 2
    assert info.macs == 2 * load_model(torch_models["cnn.pt2"]).macs


@pytest.mark.parametrize("target,backend,model", [
    ("host", "tvm", "cnn.pt2"),  # from_exported_program
    ("host", "onnxruntime", "cnn.pt2"),  # the dynamo ONNX exporter
    ("rpi4", "tvm", "residual.pt2"),
    ("rpi4", "onnxruntime", "residual.pt2"),
    ("host", "onnxruntime", "cnn.pt"),  # the TorchScript ONNX exporter
    ("rpi4", "tvm", "cnn.pt"),
    ("host", "executorch", "cnn.pt2"),  # lowered to .pte with the XNNPACK partitioner
])
def test_builds_validate_against_pytorch(torch_models, tmp_path, target, backend, model):
    shapes = {"image": (1, 3, 16, 16)} if model.endswith(".pt") else {}
    result = build(BuildOptions(target=target, model=torch_models[model], backend=backend, out=tmp_path / "b",
                                input_shapes=shapes, samples=8))
    validation = result.report["validation"]
    assert validation["passed"] and validation["reference"] == "torch", validation
    assert validation["max_abs_error"] < 1e-4
    expected = "torch-export" if backend in ("tvm", "executorch") and model.endswith(".pt2") else "onnx"
    assert result.report["model"]["compiled_format"] == expected
    assert "torch" in result.report["toolchain"]


def test_reference_runs_the_program_itself(torch_models, tmp_path):
    """The yardstick is PyTorch running the saved program: a changed bias moves its outputs by exactly that."""
    import torch

    cnn, _ = _seeded_modules()
    with torch.no_grad():
        cnn.classifier.bias += 1.0
    altered = tmp_path / "altered.pt2"
    torch.export.save(torch.export.export(cnn, (torch.zeros(1, 3, 16, 16),)), altered)
    from toolchain.model.reference import reference_outputs

    info = load_model(torch_models["cnn.pt2"])
    sample = [np.random.default_rng(0).normal(size=(2, 1, 3, 16, 16)).astype(np.float32)]
    original, changed = reference_outputs(info, sample)[0], reference_outputs(load_model(altered), sample)[0]
    np.testing.assert_allclose(changed - original, 1.0, rtol=1e-5)


def test_litert_says_it_cannot_take_pytorch(torch_models, tmp_path):
    with pytest.raises(BadInput, match="backend 'litert' compiles tflite models and cannot take a torch-export"):
        build(BuildOptions(target="host", model=torch_models["cnn.pt2"], backend="litert", out=tmp_path / "b"))


def test_bad_pytorch_files_exit_2(torch_models, tmp_path):
    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(torch_models["cnn.pt2"].read_bytes()[:4000])
    damaged = tmp_path / "damaged.pt2"  # a valid zip whose program is missing
    with zipfile.ZipFile(torch_models["cnn.pt2"]) as source, zipfile.ZipFile(damaged, "w") as copy:
        for name in source.namelist():
            if not name.endswith("model.json"):
                copy.writestr(name, source.read(name))
    cases = {
        torch_models["pickled.pt"]: "is a pickled PyTorch object (torch.save), not TorchScript",
        truncated: "is not a PyTorch archive",
        damaged: "is not a readable torch.export program",
    }
    for path, sentence in cases.items():
        before = path.read_bytes()
        result = invoke("inspect", "--model", str(path))
        assert result.returncode == 2, result.stderr
        message = result.stderr.strip()
        assert sentence in message and ("torch.export.save(" in message or "readable" in sentence), message
        assert len(message.splitlines()) == 1 and "Traceback" not in result.stderr
        assert path.read_bytes() == before


@pytest.mark.parametrize("target", ["host", "rpi4"])
def test_auto_builds_an_exported_cnn_with_executorch_among_the_candidates(torch_models, tmp_path, target):
    result = build(BuildOptions(target=target, model=torch_models["cnn.pt2"], backend="auto", out=tmp_path / "b",
                                samples=4))
    assert result.report["validation"]["passed"]
    candidates = {c["backend"]: c for c in result.report["selection"]["candidates"]}
    assert candidates["executorch"]["validated"], candidates["executorch"]
    if target == "rpi4":  # measured like the others, by instructions under emulation
        assert result.report["selection"]["by"] == "instructions"
        assert candidates["executorch"]["instructions_per_inference"] > 0


def test_executorch_runs_on_rpi4_without_python_or_torch(torch_models, tmp_path):
    """The rpi4 bundle is the C++ runner and ExecuTorch's aarch64 libraries: validated against PyTorch under
    qemu-user, instructions counted, and it speaks the bundle protocol as it is."""
    result = build(BuildOptions(target="rpi4", model=torch_models["residual.pt2"], backend="executorch",
                                out=tmp_path / "b", samples=8))
    report = result.report
    assert report["validation"]["passed"] and report["validation"]["reference"] == "torch"
    assert report["validation"]["max_abs_error"] < 1e-4
    assert report["bench"]["runner"] == "qemu-user" and report["bench"]["instructions_per_inference"] > 0
    bundle_dir = result.out_dir / "bundle"
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["entry"]["kind"] == "native" and manifest["entry"]["argv"] == ["./runner"]
    libraries = sorted(p.name for p in (bundle_dir / "lib").iterdir())
    assert libraries == sorted(["libexecutorch.so", "libexecutorch_threadpool.so", "libexecutorch_backend_xnnpack.so",
                                "libexecutorch_kernels_optimized.so"])
    for binary in ["runner", *(f"lib/{name}" for name in libraries)]:
        assert elf_machine(bundle_dir / binary) == EM_AARCH64, binary
    assert not list(bundle_dir.rglob("*.py"))  # no Python runner, and no libtorch among the libraries above
    import torch

    from toolchain import runners
    from toolchain.target.profile import load_target

    sample = np.random.default_rng(1).normal(size=(3, 1, 1, 8, 8)).astype(np.float32)
    sample.tofile(tmp_path / "input0.bin")
    # counted on one thread whatever --threads says, and the same run after run
    counts = [runners.get("qemu-user").count_instructions(runners.RunRequest(
        load_target("rpi4"), bundle_dir, manifest, tmp_path, tmp_path, 3, 0, 0, threads, 600)).instructions_per_inference
        for threads in (1, 4)]
    assert counts[0] == counts[1] > 1000
    outputs = run_protocol(bundle_dir, [sample], tmp_path / "protocol", warmup=1, repeat=2)
    _, residual = _seeded_modules()
    with torch.no_grad():
        expected = np.stack([residual(torch.from_numpy(s)).numpy() for s in sample])
    np.testing.assert_allclose(outputs[0], expected, atol=1e-4)


def test_keras_becomes_a_torch_export_program_that_matches_keras(tiny_keras, tmp_path):
    import keras

    from toolchain.convert import to_torch_export
    from toolchain.model.reference import reference_outputs

    info = load_model(tiny_keras)
    program = to_torch_export(info, tmp_path)
    assert program.format == "torch-export" and program.path == tmp_path / "tiny_cnn.pt2"
    assert [t.shape for t in program.inputs] == [t.shape for t in info.inputs] == [(1, 8, 8, 1)]
    sample = [np.random.default_rng(2).random((4, 1, 8, 8, 1), dtype=np.float32)]
    model = keras.saving.load_model(tiny_keras, compile=False)
    expected = np.stack([np.asarray(model(s, training=False)) for s in sample[0]])
    np.testing.assert_allclose(reference_outputs(program, sample)[0], expected, atol=1e-5)
    assert list(tmp_path.iterdir()) == [program.path]  # nothing half-written beside it


@pytest.mark.slow
def test_executorch_builds_a_keras_model_for_rpi4(tiny_keras, tmp_path):
    result = build(BuildOptions(target="rpi4", model=tiny_keras, backend="executorch", out=tmp_path / "b",
                                samples=8))
    assert result.report["model"]["compiled_format"] == "torch-export"
    assert result.report["validation"]["passed"] and result.report["validation"]["reference"] == "tensorflow"
    assert result.report["bench"]["instructions_per_inference"] > 0


def test_auto_leaves_the_slow_keras_conversion_to_backend_executorch(tiny_keras, tmp_path):
    from toolchain.pipeline.build import _candidate

    skipped = _candidate(BuildOptions(target="rpi4", model=tiny_keras, backend="auto"), "executorch", "keras",
                         tmp_path, lambda _: None)
    assert skipped.built is None and skipped.exit_code == 2
    assert skipped.error == ("--backend auto does not convert a keras model for executorch (it compiles torch-export "
                             "models and the conversion is slow); build it with --backend executorch.")
    assert not list(tmp_path.iterdir())


def test_executorch_refuses_torchscript(torch_models, tmp_path):
    with pytest.raises(BadInput, match="backend 'executorch' compiles torch-export models and cannot take a "
                                       "torchscript model"):
        build(BuildOptions(target="host", model=torch_models["cnn.pt"], backend="executorch", out=tmp_path / "b",
                           input_shapes={"image": (1, 3, 16, 16)}))
