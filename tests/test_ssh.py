"""Deploy and bench over SSH against a real OpenSSH server on 127.0.0.1 (throwaway keys, own process group).

The "board" is this machine: a login lands in a fresh folder with a fixed PATH whatever the
account's shell profile says, and its python3 is, for the aarch64 test, the emulated Raspberry Pi OS
userland's under qemu. Transport, deployment, checking and collection are the real thing.
"""

import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from toolchain.boards import deploy
from toolchain import runners
from toolchain.hostenv import userland
from toolchain.pipeline.build import BuildOptions, build
from toolchain.bundle import entry_of, read_manifest
from toolchain.errors import BadInput, BuildError
from toolchain.boards.ssh import SshLink
from toolchain.target.profile import load_target

from conftest import free_port, invoke

# The board's login: fixed PATH and folder; sftp (what scp speaks) served from the same folder.
BOARD_SHELL = """#!/bin/sh
export PATH={bin_dir}:/usr/bin:/bin
cd {home} || exit 1
case "$SSH_ORIGINAL_COMMAND" in
  "") exec /bin/sh ;;
  sftp|internal-sftp) exec {sftp_server} ;;
esac
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""
SSHD_CONFIG = """ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
AllowUsers {user}
Subsystem sftp {sftp_server}
ForceCommand {board_shell}
LogLevel ERROR
"""


@dataclass
class Board:
    host: str
    port: int
    identity: Path
    known_hosts: Path
    home: Path  # the login folder
    bin_dir: Path  # first on the login's PATH

    def connection(self, **changes) -> runners.Connection:
        return runners.Connection(**{"host": self.host, "port": self.port, "identity": self.identity,
                                     "known_hosts": self.known_hosts, **changes})

    def cli_options(self) -> list[str]:
        return ["--host", self.host, "--port", str(self.port), "--identity", str(self.identity),
                "--known-hosts", str(self.known_hosts)]


def _sshd() -> str:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    pytest.fail("sshd is not installed: apt-get install openssh-server, or run ./bootstrap.sh")


# Deploy refuses unsigned builds: every build of this module is signed by a key it trusts.
pytestmark = pytest.mark.usefixtures("signed_builds")

@pytest.fixture(scope="module")
def board(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    home, bin_dir = root / "home", root / "bin"
    home.mkdir()
    bin_dir.mkdir()
    for key in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key, "-f", str(root / key)], check=True)
    shutil.copy(root / "user_key.pub", root / "authorized_keys")
    port = free_port()
    key_type, key_data = (root / "host_key.pub").read_text().split()[:2]
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {key_type} {key_data}\n")
    sftp_server = "/usr/lib/openssh/sftp-server"
    board_shell = root / "board-shell"
    board_shell.write_text(BOARD_SHELL.format(bin_dir=bin_dir, home=home, sftp_server=sftp_server))
    board_shell.chmod(0o755)
    user = getpass.getuser()
    config = root / "sshd_config"
    config.write_text(SSHD_CONFIG.format(port=port, host_key=root / "host_key", user=user, sftp_server=sftp_server,
                                         authorized_keys=root / "authorized_keys", board_shell=board_shell))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation folder, as its service makes
    server = subprocess.Popen([_sshd(), "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_port(port, server)
        yield Board(f"{user}@127.0.0.1", port, root / "user_key", root / "known_hosts", home, bin_dir)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=10)


def _wait_for_port(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"sshd exited: {server.stderr.read().strip()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"sshd did not listen on 127.0.0.1:{port} within 10 s")


@pytest.fixture(scope="module")
def host_tvm_build(tmp_path_factory, tiny_onnx):
    out = tmp_path_factory.mktemp("ssh-build") / "tvm"
    return build(BuildOptions(target="host", model=tiny_onnx, backend="tvm", out=out))


def _run_on(runner, target_name: str, out_dir: Path, samples: int = 3, repeat: int = 5):
    target = load_target(target_name)
    manifest = read_manifest(out_dir / "bundle")
    rng = np.random.default_rng(1)
    inputs = [rng.random((samples, *spec["shape"])).astype(spec["dtype"]) for spec in manifest["inputs"]]
    return inputs, runners.run_bundle(runner, target, out_dir / "bundle", manifest, inputs, 1, repeat)


def _board_python(board: Board, command: str) -> None:
    """Make the board's python3 a script running `command`."""
    script = board.bin_dir / "python3"
    script.write_text(f"#!/bin/sh\n{command}\n")
    script.chmod(0o755)


def test_deploy_checks_copies_and_skips_an_identical_bundle(board, host_tvm_build):
    out = host_tvm_build.out_dir
    first = deploy.deploy(out, board.host, board.port, board.identity, board.known_hosts)
    assert first.copied and first.remote_dir == "edgeyard/host/tiny_mlp/tvm"
    remote = board.home / first.remote_dir
    for record in read_manifest(out / "bundle")["files"]:
        assert (remote / record["path"]).read_bytes() == (out / "bundle" / record["path"]).read_bytes()
    assert os.access(remote / "run.sh", os.X_OK) and os.access(remote / "runner", os.X_OK)
    assert not deploy.deploy(out, board.host, board.port, board.identity, board.known_hosts).copied


def test_deploy_refuses_a_bundle_that_does_not_match_its_manifest(board, host_tvm_build, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(host_tvm_build.out_dir, copy)
    with open(copy / "bundle" / "model.so", "ab") as library:
        library.write(b"\0")
    with pytest.raises(BuildError, match=r"model\.so does not match its sha256 in manifest\.json"):
        deploy.deploy(copy, board.host, board.port, board.identity, board.known_hosts, remote_dir="edgeyard/tampered")
    (copy / "bundle" / "model.so").write_bytes((host_tvm_build.out_dir / "bundle" / "model.so").read_bytes())
    (copy / "bundle" / "extra.txt").write_text("not built")
    with pytest.raises(BuildError, match=r"extra\.txt is not listed in manifest\.json"):
        deploy.deploy(copy, board.host, board.port, board.identity, board.known_hosts, remote_dir="edgeyard/tampered")
    assert not (board.home / "edgeyard" / "tampered").exists()


def test_bundle_runs_on_the_board_and_results_come_back(board, host_tvm_build):
    runner, why = runners.select(load_target("host"), entry_of(read_manifest(host_tvm_build.out_dir / "bundle")),
                                 board.connection())
    assert runner is not None and runner.name == "ssh", why
    inputs, result = _run_on(runner, "host", host_tvm_build.out_dir)
    _, local = _run_on(runners.get("host"), "host", host_tvm_build.out_dir)
    np.testing.assert_array_equal(result.outputs[0], local.outputs[0])
    assert len(result.timings_ns) == 5 and min(result.timings_ns) > 0 and result.emulated is False


def test_unknown_host_key_is_refused(board, host_tvm_build, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(BuildError, match="Host key verification failed"):
        deploy.deploy(host_tvm_build.out_dir, board.host, board.port, board.identity, empty)


@pytest.mark.fast
@pytest.mark.parametrize("host", ["-oProxyCommand=touch /tmp/pwned", "pi@host;reboot", "pi@$(id)", ""])
def test_hostile_destination_is_bad_input(host):
    with pytest.raises(BadInput):
        SshLink(host)


def test_cli_deploy_and_bench_over_ssh(board, tiny_onnx, tmp_path):
    common = ["--target", "host", "--backend", "onnxruntime", "--model", str(tiny_onnx), "--out", str(tmp_path / "b")]
    _board_python(board, f'exec {sys.executable} "$@"')  # this environment's, which has onnxruntime
    deployed = invoke("deploy", *common, *board.cli_options())
    assert deployed.returncode == 0, deployed.stderr
    assert "edgeyard/host/tiny_mlp/onnxruntime" in deployed.stdout
    benched = invoke("bench", *common, "--runs", "7", *board.cli_options())
    assert benched.returncode == 0, benched.stderr
    assert "over 7 runs on ssh" in benched.stdout and "emulated" not in benched.stdout
    missing = invoke("deploy", *common)
    assert missing.returncode == 2 and "--host" in missing.stderr


@pytest.mark.slow
def test_rpi4_litert_bundle_on_a_board_whose_python_runs_under_qemu(board, tiny_tflite, tmp_path):
    target = load_target("rpi4")
    root = userland.board_root(target)
    _board_python(board, f'exec qemu-aarch64 -cpu cortex-a72 -L {root} {root / userland.PYTHON} "$@"')
    built = build(BuildOptions(target="rpi4", model=tiny_tflite, backend="litert", out=tmp_path / "litert"))
    runner, _ = runners.select(target, entry_of(read_manifest(built.out_dir / "bundle")), board.connection())
    _, remote = _run_on(runner, "rpi4", built.out_dir, repeat=2)
    _, emulated = _run_on(runners.get("qemu-user"), "rpi4", built.out_dir, repeat=0)
    np.testing.assert_array_equal(remote.outputs[0], emulated.outputs[0])
    assert len(remote.timings_ns) == 2
