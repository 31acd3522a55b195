"""Encryption at rest (`invoke build --encrypt KEY`): rpi4 bundles whose model is AES-256-GCM encrypted (tvm's
model.so, litert's .tflite, onnxruntime's .onnx), run under qemu-user with the right key, a wrong key, no key and
an altered byte."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_bad_input import assert_clean_refusal, run_cli, snapshot

from toolchain import encryption, runners, signing
from toolchain.bundle import BUNDLE, read_manifest
from toolchain.errors import BadInput, BuildError
from toolchain.target.profile import load_target

TAG_MISMATCH = "(AES-GCM tag mismatch): a wrong key or an altered file."


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    return encryption.keygen(tmp_path_factory.mktemp("keys") / "model.key")


@pytest.mark.fast
def test_keygen_writes_a_private_32_byte_key_and_keeps_it(tmp_path, capsys):
    code, out, err = run_cli(["keygen", "--aes", str(tmp_path / "model.key")], capsys)
    assert code == 0, err
    key = tmp_path / "model.key"
    assert len(key.read_bytes()) == encryption.KEY_BYTES and key.stat().st_mode & 0o777 == 0o600
    before = snapshot(tmp_path)
    code, _, err = run_cli(["keygen", "--aes", str(key)], capsys)
    assert_clean_refusal(code, err, 2, before, snapshot(tmp_path))
    assert "--force" in err


@pytest.mark.fast
def test_encryption_is_deterministic_and_authenticated(tmp_path, key):
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    plain = np.random.default_rng(0).bytes(5000)
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.tflite").write_bytes(plain)
        encryption.encrypt_file(tmp_path / name / "model.tflite", key)
    blob = (tmp_path / "a" / "model.tflite").read_bytes()
    assert blob == (tmp_path / "b" / "model.tflite").read_bytes()  # reproducible builds stay byte-identical
    assert blob.startswith(encryption.MAGIC) and plain not in blob
    nonce, body = blob[8:20], blob[20:]
    assert AESGCM(key.read_bytes()).decrypt(nonce, body, b"model.tflite") == plain
    with pytest.raises(InvalidTag):  # the file name is the associated data: no passing for another file
        AESGCM(key.read_bytes()).decrypt(nonce, body, b"model.onnx")
    (tmp_path / "other.key").write_bytes(bytes(32))
    encryption.encrypt_file(tmp_path / "b" / "model.tflite", tmp_path / "other.key")
    assert (tmp_path / "b" / "model.tflite").read_bytes()[8:20] != nonce  # the nonce depends on the key


@pytest.mark.fast
@pytest.mark.parametrize("content", [b"", bytes(31), bytes(33)])
def test_a_key_file_must_hold_32_bytes(tmp_path, content):
    (tmp_path / "key").write_bytes(content)
    with pytest.raises(BadInput, match=f"holds {len(content)} bytes, not a 32-byte AES-256 key"):
        encryption.read_key(tmp_path / "key")


@pytest.mark.fast
@pytest.mark.parametrize("target, backend, says", [
    ("nucleo-l4r5zi", "kernels", "nucleo-l4r5zi is a microcontroller"),
    ("host", "executorch", "backend 'executorch' cannot store the model encrypted (--encrypt); give --backend tvm or "
                           "--backend litert or --backend onnxruntime."),
])
def test_encrypt_is_refused_where_it_is_not_supported(tmp_path, capsys, key, target, backend, says):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the refusal comes first")
    before = snapshot(tmp_path)
    code, _, err = run_cli(["build", "--target", target, "--backend", backend, "--model", str(model), "--out",
                            str(tmp_path / "out"), "--encrypt", str(key)], capsys)
    assert_clean_refusal(code, err, 2, before, snapshot(tmp_path))
    assert says in err


@pytest.mark.fast
def test_a_key_inside_the_build_folder_is_refused(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "report.json").write_text("{}")  # an earlier build's folder, which a build replaces whole
    key = encryption.keygen(tmp_path / "out" / "model.key")
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read: the refusal comes first")
    before = snapshot(tmp_path)
    code, _, err = run_cli(["build", "--target", "host", "--backend", "onnxruntime", "--model", str(model),
                            "--out", str(tmp_path / "out"), "--encrypt", str(key)], capsys)
    assert_clean_refusal(code, err, 2, before, snapshot(tmp_path))
    assert "keep the encryption key outside every build" in err


def test_tvm_refuses_to_encrypt_a_static_executable(tmp_path, capsys, key, tiny_tflite):
    before = snapshot(tmp_path)
    code, _, err = run_cli(["build", "--target", "rpi2", "--model", str(tiny_tflite), "--out", str(tmp_path / "out"),
                            "--encrypt", str(key)], capsys)
    assert_clean_refusal(code, err, 2, before, snapshot(tmp_path))
    assert "only on boards with a TVM runtime on the CPU, and rpi2 runs one static executable." in err


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory, tiny_tflite, tiny_onnx, key):
    """The tiny models built for rpi4 with tvm, litert and onnxruntime, encrypted, validated under qemu-user."""
    from toolchain.options import BuildOptions
    from toolchain.pipeline.build import build

    out = tmp_path_factory.mktemp("encrypted")
    models = {"tvm": tiny_onnx, "litert": tiny_tflite, "onnxruntime": tiny_onnx}
    return {backend: build(BuildOptions(target="rpi4", model=model, backend=backend, out=out / backend, samples=8,
                                        encrypt=key))
            for backend, model in models.items()}


def _run(bundle_dir: Path, env: dict) -> runners.RunResult:
    """The bundle's entry under qemu-user, straight (no manifest or signature check first)."""
    manifest = read_manifest(bundle_dir)
    x = [np.random.default_rng(1).random((1, *t["shape"])).astype(t["dtype"]) for t in manifest["inputs"]]
    return runners.run_bundle(runners.get("qemu-user"), load_target("rpi4"), bundle_dir, manifest, x, env=env)


@pytest.mark.parametrize("backend", ["tvm", "litert", "onnxruntime"])
def test_an_encrypted_rpi4_bundle_validates_under_qemu_with_its_key(encrypted, key, backend):
    built = encrypted[backend]
    validation = built.report["validation"]
    assert validation["ran"] and validation["passed"], validation["status"]
    assert built.report["bench"]["runner"] == "qemu-user" and built.report["bench"]["instructions_per_inference"]
    manifest = read_manifest(built.out_dir / BUNDLE)
    (model_file,) = manifest["encryption"]["files"]
    assert manifest["encryption"]["algorithm"] == "AES-256-GCM"
    assert (built.out_dir / BUNDLE / model_file).read_bytes().startswith(encryption.MAGIC)
    secret = key.read_bytes()
    for path in built.out_dir.rglob("*"):  # the key is nowhere in the build folder: no copy, no bytes of it
        assert not path.is_file() or secret not in path.read_bytes(), path
        assert path.name != key.name
    signing.check_build(built.out_dir)  # the manifest and provenance are intact


def test_bench_finds_the_encrypted_build_and_runs_it_with_its_key(encrypted, key):
    from toolchain.options import BuildOptions
    from toolchain.pipeline.bench import run_bench

    built = encrypted["onnxruntime"]
    timed = run_bench(BuildOptions(target="rpi4", model=Path(built.report["model"]["path"]), backend="onnxruntime",
                                   out=built.out_dir, samples=8, encrypt=key), runs=3, warmup=1)
    assert timed.cached and timed.report["bench"]["runs"] == 3
    assert timed.report["bench"]["instructions_per_inference"] == built.report["bench"]["instructions_per_inference"]


@pytest.mark.parametrize("backend", ["tvm", "onnxruntime"])
def test_encrypted_builds_are_reproducible(encrypted, key, backend):
    from toolchain.options import BuildOptions
    from toolchain.pipeline.reproducibility import check_reproducible

    built = encrypted[backend]
    checked = check_reproducible(BuildOptions(target="rpi4", model=Path(built.report["model"]["path"]),
                                              backend=backend, out=built.out_dir, samples=8, encrypt=key))
    model_file = read_manifest(built.out_dir / BUNDLE)["encryption"]["files"][0]
    assert f"{BUNDLE}/{model_file}" in checked.compared


@pytest.mark.parametrize("backend", ["tvm", "litert", "onnxruntime"])
def test_a_wrong_or_missing_key_fails_with_one_sentence(encrypted, tmp_path, backend):
    bundle_dir = encrypted[backend].out_dir / BUNDLE
    model_file = read_manifest(bundle_dir)["encryption"]["files"][0]
    wrong = tmp_path / "wrong.key"
    wrong.write_bytes(np.random.default_rng(2).bytes(32))
    with pytest.raises(BuildError) as failed:
        _run(bundle_dir, encryption.runner_env(wrong))
    assert f"{model_file} does not decrypt with the key in {wrong} {TAG_MISMATCH}" in str(failed.value)
    with pytest.raises(BuildError, match=f"cannot read the model key {tmp_path / 'absent.key'}"):
        _run(bundle_dir, {encryption.KEY_ENV: str(tmp_path / "absent.key")})


@pytest.mark.parametrize("backend", ["tvm", "onnxruntime"])
def test_an_altered_ciphertext_byte_is_refused_by_the_check_then_by_gcm(encrypted, key, tmp_path, capsys, backend):
    copy = shutil.copytree(encrypted[backend].out_dir, tmp_path / "copy")
    bundle_dir = copy / BUNDLE
    model = bundle_dir / read_manifest(bundle_dir)["encryption"]["files"][0]
    blob = bytearray(model.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    model.write_bytes(bytes(blob))
    with pytest.raises(BuildError, match=f"{model.name}"):
        signing.check_build(copy)
    before = snapshot(tmp_path)
    code, _, err = run_cli(["bench", "--target", "rpi4", "--backend", backend, "--model",
                            encrypted[backend].report["model"]["path"], "--out", str(copy), "--samples", "8",
                            "--encrypt", str(key)], capsys)
    assert_clean_refusal(code, err, 1, before, snapshot(tmp_path))
    assert model.name in err and "refusing to use it" in err
    with pytest.raises(BuildError) as failed:  # the check bypassed: the tag stops it, no output is written
        _run(bundle_dir, encryption.runner_env(key))
    assert TAG_MISMATCH in str(failed.value) and "wrote 0 values" not in str(failed.value)
