"""Signed builds, tampering, and faults, on real host builds of a small ONNX model (onnxruntime backend:
the quickest build there is). Each refusal is also a bad-input corpus case (test_bad_input.py's checks)."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_bad_input import assert_clean_refusal, run_cli, snapshot

PROJECT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    from toolchain.signing import keygen

    folder = tmp_path_factory.mktemp("keys")
    return keygen(folder / "signing-key.pem"), keygen(folder / "other-key.pem")


@pytest.fixture(scope="module")
def signed_build(tiny_onnx, keys, tmp_path_factory):
    from toolchain.options import BuildOptions
    from toolchain.pipeline.build import build

    out = tmp_path_factory.mktemp("signed") / "build"
    build(BuildOptions(target="host", model=tiny_onnx, backend="onnxruntime", out=out, samples=4,
                       signing_key=keys[0][0]))
    return out


@pytest.fixture
def trusting(monkeypatch, keys, tmp_path):
    monkeypatch.setenv("EDGEYARD_SIGNING_KEY", str(keys[0][0]))
    monkeypatch.chdir(tmp_path)


def _copy(build: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(build, copy)
    return copy


def test_signed_build_verifies_and_states_its_provenance(signed_build, trusting, capsys, keys):
    import json

    code, out, err = run_cli(["verify", str(signed_build)], capsys)
    assert code == 0 and "signed by key" in out, err
    statement = json.loads((signed_build / "provenance.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    assert {s["name"] for s in statement["subject"]} >= {"bundle/run.sh"}
    # The public key alone verifies; another key does not.
    assert run_cli(["verify", str(signed_build), "--key", str(keys[0][1])], capsys)[0] == 0
    code, _, err = run_cli(["verify", str(signed_build), "--key", str(keys[1][1])], capsys)
    assert code == 1 and "signed by key" in err


def _files(build: Path) -> list[str]:
    # The reports and the libraries' log are for people; the signature covers the bundle and provenance.
    return sorted(str(p.relative_to(build)) for p in build.rglob("*") if p.is_file()
                  and p.name not in ("report.json", "report.md", "report.html", "third-party.log"))


@pytest.mark.parametrize("how", ["append", "flip"])
def test_a_tampered_byte_anywhere_is_refused_by_verify(signed_build, trusting, capsys, tmp_path, how):
    for relative in _files(signed_build):
        copy = _copy(signed_build, tmp_path / relative.replace("/", "_"))
        target = copy / relative
        data = bytearray(target.read_bytes())
        if how == "append":
            data += b" "
        else:
            data[len(data) // 2] ^= 1
        target.write_bytes(bytes(data))
        before = snapshot(copy)
        code, _, err = run_cli(["verify", str(copy)], capsys)
        assert_clean_refusal(code, err, 1, before, snapshot(copy))
        assert relative.split("/")[-1] in err or "signature" in err


def test_bench_and_deploy_refuse_an_altered_build_instead_of_rebuilding(signed_build, tiny_onnx, trusting, capsys,
                                                                        tmp_path):
    copy = _copy(signed_build, tmp_path)
    manifest = copy / "bundle" / "manifest.json"
    manifest.write_text(manifest.read_text().replace('"python3"', '"sh"'))
    common = ["--target", "host", "--model", str(tiny_onnx), "--backend", "onnxruntime", "--out", str(copy),
              "--samples", "4"]
    for args in (["bench", *common, "--runs", "1"], ["deploy", *common, "--host", "127.0.0.1", "--port", "1"]):
        before = snapshot(copy)
        code, _, err = run_cli(args, capsys)
        assert_clean_refusal(code, err, 1, before, snapshot(copy))
        assert "manifest.json" in err


def test_unsigned_build_is_exit_2_for_verify_and_deploy(signed_build, tiny_onnx, capsys, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEYARD_SIGNING_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    copy = _copy(signed_build, tmp_path)
    (copy / "signature.json").unlink()
    before = snapshot(copy)
    code, _, err = run_cli(["verify", str(copy)], capsys)
    assert_clean_refusal(code, err, 2, before, snapshot(copy))
    from toolchain.boards.deploy import deploy
    from toolchain.errors import BadInput, BuildError

    with pytest.raises(BadInput):
        deploy(copy, "127.0.0.1", port=1)
    # An unsigned build still checks its manifest against report.json.
    manifest = copy / "bundle" / "manifest.json"
    manifest.write_text(manifest.read_text() + " ")
    with pytest.raises(BuildError, match="manifest.json"):
        deploy(copy, "127.0.0.1", port=1, allow_unsigned=True)


def test_report_markdown_escapes_hostile_tensor_names(tmp_path):
    """A tensor name with a newline, a '|' and an escape sequence stays in its table cell."""
    import onnx
    from onnx import TensorProto, helper

    from toolchain.options import BuildOptions
    from toolchain.pipeline.build import build

    name = "out\n|x\x1b[2J"
    graph = helper.make_graph([helper.make_node("Relu", ["in"], [name])], "hostile",
                              [helper.make_tensor_value_info("in", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "hostile.onnx")
    built = build(BuildOptions(target="host", model=tmp_path / "hostile.onnx", backend="onnxruntime",
                               out=tmp_path / "b", samples=2))
    markdown = (built.out_dir / "report.md").read_text()
    assert "\x1b" not in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| out\\n"))
    assert "\\|x" in row and "\\x1b" in row


def _cli(args, cwd, env):
    return subprocess.Popen([sys.executable, "-m", "invoke", "-r", str(PROJECT), *args], cwd=cwd,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(PROJECT), **env})


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_killed_build_leaves_nothing_the_next_build_does_not_remove(sig, tiny_onnx, tmp_path):
    env = {"TMPDIR": str(tmp_path / "tmp"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    (tmp_path / "tmp").mkdir()
    args = ["build", "--target", "host", "--model", str(tiny_onnx), "--backend", "onnxruntime", "--out", "b",
            "--samples", "4"]
    for delay in (1.5, 3.0):
        process = _cli(args, tmp_path, env)
        time.sleep(delay)
        process.send_signal(sig)
        _, err = process.communicate(timeout=120)
        if sig == signal.SIGTERM and process.returncode != 0:
            assert process.returncode == 143 and err.strip().splitlines()[-1] == "terminated", err
            assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]
    done = _cli(args, tmp_path, env)
    assert done.wait(timeout=300) == 0, done.stderr.read()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]
    assert not list((tmp_path / "tmp").iterdir())


@pytest.mark.slow
def test_two_concurrent_builds_of_the_same_thing(tiny_onnx, tmp_path):
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    args = ["build", "--target", "host", "--model", str(tiny_onnx), "--backend", "onnxruntime", "--out", "b",
            "--samples", "4"]
    first, second = _cli(args, tmp_path, env), _cli(args, tmp_path, env)
    codes = [first.wait(timeout=300), second.wait(timeout=300)]
    assert 0 in codes
    from toolchain.signing import check_build

    check_build(tmp_path / "b")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KB tmpfs with 4 KB left (skipped where mounting is not allowed: not root, no CAP_SYS_ADMIN)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    try:
        (disk / "filler").write_bytes(bytes(60 * 1024))
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def test_a_full_disk_is_one_sentence_naming_the_file_and_leaves_nothing(full_disk, tiny_onnx, capsys, monkeypatch):
    monkeypatch.chdir(full_disk.parent)
    before = snapshot(full_disk)
    code, _, err = run_cli(["build", "--target", "host", "--model", str(tiny_onnx), "--backend", "onnxruntime",
                            "--out", str(full_disk / "build")], capsys)
    assert_clean_refusal(code, err, 1, before, snapshot(full_disk))
    assert "No space left on device" in err and str(full_disk) in err
