"""Flashing: command lines from the target file, the build checked against its manifest, the tool looked up,
and the gdb probe end to end: a real build written into an emulated board through qemu-system's gdbstub.

flash() reads only the build's manifest and images, so the option and probe-tool tests give it a stand-in
firmware build (fast); the gdb tests flash what a real build for each board made.
"""

import os
import shutil
import socket
import stat
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from toolchain import signing
from toolchain.boards.flashers import flash
from toolchain.bundle import BUNDLE, Entry, read_manifest, write_manifest
from toolchain.errors import BadInput, BuildError, MissingTool

from conftest import free_port, invoke

BOARD = "nucleo-l4r5zi"
EMULATED_BOARDS = ["nucleo-l4r5zi", "stm32f746g-disco", "corstone-300"]  # Cortex-M4, M7, M55


@pytest.fixture
def built(tmp_path, monkeypatch) -> Path:
    """A stand-in firmware build for the board: the images a build leaves, a manifest recording them, and a
    signature (flash refuses unsigned builds) by a key the test trusts."""
    out = tmp_path / "built"
    bundle_dir = out / BUNDLE
    bundle_dir.mkdir(parents=True)
    (bundle_dir / "firmware.elf").write_bytes(b"\x7fELF" + bytes(60))
    (bundle_dir / "firmware.bin").write_bytes(bytes(range(64)))
    images = {"board": "firmware.elf", "board_binary": "firmware.bin"}
    write_manifest(bundle_dir, "tvm", BOARD, Entry("firmware", ["./firmware.elf"], "armv7e-m"), [], [],
                   extra={"firmware": {"images": images}})
    signing.write_provenance(out, {"stand-in": True})
    key, _ = signing.keygen(tmp_path / "key.pem")
    monkeypatch.setenv(signing.KEY_ENV, str(key))
    signing.sign(out, key)
    return out


def _expected(probe: str, out: Path) -> list[list[str]]:
    bundle = (out / BUNDLE).resolve()
    return [[arg.format(bundle=bundle) for arg in argv] for argv in {
        "pyocd": [["pyocd", "load", "--target", "stm32l4r5zitx", "{bundle}/firmware.elf"]],
        "openocd": [["openocd", "-f", "board/st_nucleo_l4.cfg", "-c",
                     "program {{{bundle}/firmware.elf}} verify reset exit"]],
        "st-flash": [["st-flash", "--reset", "write", "{bundle}/firmware.bin", "0x08000000"]],
    }[probe]]


@pytest.mark.fast
@pytest.mark.parametrize("probe", ["pyocd", "openocd", "st-flash"])
def test_dry_run_gives_the_exact_commands_and_what_they_verify(built, probe):
    plan = flash(BOARD, built, probe, dry_run=True)
    assert plan.commands == _expected(probe, built) and plan.script is None
    assert {"pyocd": "what pyocd load checks itself", "openocd": "by OpenOCD's verify_image",
            "st-flash": "read back by st-flash write"}[probe] in plan.verifies


@pytest.mark.fast
def test_openocd_refuses_a_path_that_would_break_its_tcl_quoting(built, tmp_path):
    """OpenOCD reads the path inside a Tcl brace word: a brace in it would end the word early."""
    odd = built.rename(tmp_path / "a}b")
    with pytest.raises(BadInput, match=r"openocd cannot be given a path holding braces"):
        flash(BOARD, odd, "openocd", dry_run=True)
    assert flash(BOARD, odd, "pyocd", dry_run=True).commands == _expected("pyocd", odd)  # argv needs no quoting


@pytest.mark.fast
def test_default_probe_comes_from_the_target(built):
    assert flash(BOARD, built, dry_run=True).commands[0][0] == "pyocd"


@pytest.mark.fast
@pytest.mark.parametrize("probe,options,hint", [
    ("st-flash", {}, "st-flash is not installed; install it with: apt-get install stlink-tools"),
    ("gdb", {"gdb_server": "127.0.0.1:3333"}, "gdb-multiarch is not installed; install it with: apt-get install "
                                               "gdb-multiarch, or run ./bootstrap.sh"),
])
def test_missing_tool_exits_3_with_the_install_hint(built, monkeypatch, tmp_path, probe, options, hint):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingTool, match=hint) as err:
        flash(BOARD, built, probe, **options)
    assert err.value.exit_code == 3


@pytest.mark.fast
def test_runs_the_tool_with_those_commands(built, monkeypatch, tmp_path):
    """A stand-in st-flash records its arguments: flash() runs exactly what the dry run shows."""
    record = tmp_path / "arguments"
    tool = tmp_path / "st-flash"
    tool.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\n')
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    commands = flash(BOARD, built, "st-flash").commands
    assert commands == flash(BOARD, built, "st-flash", dry_run=True).commands
    assert record.read_text().split() == commands[0][1:]


@pytest.mark.fast
@pytest.mark.parametrize("change", ["append", "add a file"])
def test_a_build_that_fails_its_manifest_check_is_refused(built, tmp_path, change):
    copy = tmp_path / "out"
    shutil.copytree(built, copy)
    if change == "append":
        with open(copy / BUNDLE / "firmware.elf", "ab") as image:
            image.write(b"\0")
        message = r"firmware.elf does not match its sha256 in manifest.json; rebuild the bundle"
    else:
        (copy / BUNDLE / "extra.bin").write_bytes(b"\0")
        message = r"extra.bin is not listed in manifest.json; rebuild the bundle"
    with pytest.raises(BuildError, match=message) as err:
        flash(BOARD, copy, "pyocd", dry_run=True)
    assert err.value.exit_code == 1


@pytest.mark.fast
def test_an_unsigned_build_is_refused(built):
    (built / "signature.json").unlink()
    with pytest.raises(BadInput, match=r"is not signed \(no signature.json\); make a key with invoke keygen"):
        flash(BOARD, built, "pyocd", dry_run=True)


@pytest.mark.fast
def test_build_for_another_target_or_no_build_is_refused(built, tmp_path):
    with pytest.raises(BadInput, match="holds a build for nucleo-l4r5zi, not firmware for stm32f746g-disco"):
        flash("stm32f746g-disco", built, dry_run=True)
    with pytest.raises(BadInput, match="holds no build"):
        flash(BOARD, tmp_path, dry_run=True)
    with pytest.raises(BadInput, match=r"corstone-300 has no \[flash\] table: there is no board to flash with a "
                                       r"probe \(a GDB server can be flashed with --probe gdb"):
        flash("corstone-300", built, dry_run=True)
    with pytest.raises(BadInput, match=r"holds no emulator image"):
        flash(BOARD, built, "gdb", dry_run=True, image="emulator", gdb_server="localhost:3333")


@pytest.mark.fast
@pytest.mark.parametrize("probe,options,message", [
    ("gdb", {}, r"--probe gdb needs --gdb-server HOST:PORT"),
    ("pyocd", {"gdb_server": "localhost:3333"}, r"--gdb-server is for --probe gdb; pyocd drives the probe itself"),
    ("openocd", {"image": "emulator"}, r"openocd writes boards only; the emulator image goes through a GDB server"),
    ("gdb", {"gdb_server": "localhost:3333", "image": "qemu"}, r"--image 'qemu' is neither board nor emulator"),
    ("gdb", {"gdb_server": "localhost"}, r"--gdb-server 'localhost' is not HOST:PORT of a GDB server"),
    ("gdb", {"gdb_server": "localhost:0"}, r"--gdb-server 'localhost:0' is not HOST:PORT"),
    ("gdb", {"gdb_server": "localhost:65536"}, r"--gdb-server 'localhost:65536' is not HOST:PORT"),
    ("gdb", {"gdb_server": "localhost:3333\nshell id"}, r"is not HOST:PORT"),  # would be a second gdb command
    ("gdb", {"gdb_server": "-x evil:1"}, r"is not HOST:PORT"),
])
def test_options_that_do_not_fit_are_refused(built, probe, options, message):
    with pytest.raises(BadInput, match=message) as err:
        flash(BOARD, built, probe, dry_run=True, **options)
    assert err.value.exit_code == 2


@pytest.mark.fast
def test_server_addresses_that_are_accepted(built):
    for server in ("localhost:3333", "192.168.1.20:2331", "[::1]:61234", "bmp.lab.example:2000"):
        with pytest.raises(BadInput, match="no board image|is not a 32-bit"):  # the stand-in is no ELF image
            flash(BOARD, built, "gdb", dry_run=True, gdb_server=server)


# ---------- real builds, flashed into emulated boards through qemu-system's gdbstub ----------


@pytest.fixture(scope="module")
def firmware(tiny_tflite, tmp_path_factory, signed_builds):
    """firmware(target): the build folder of a real firmware build for the target (built once per module),
    signed by the key this module's flashes trust."""
    from toolchain.pipeline.build import BuildOptions, build

    outs = {}

    def built_for(target: str) -> Path:
        if target not in outs:
            outs[target] = tmp_path_factory.mktemp(target) / "out"
            build(BuildOptions(target=target, model=tiny_tflite, backend="tvm", out=outs[target]))
        return outs[target]

    return built_for


def test_a_real_build_for_the_board_flashes(firmware):
    """The manifest and images the tvm backend's firmware build makes are what flash() takes."""
    out = firmware(BOARD)
    for probe in ("pyocd", "st-flash"):
        assert flash(BOARD, out, probe, dry_run=True).commands == _expected(probe, out)


@contextmanager
def emulated_board(target: str, command_line: list[str]):
    """qemu-system for the target's emulated board: halted, no firmware, its gdbstub on a free loopback port,
    semihosting on with the harness's command line. Yields (port, process); the process is gone after."""
    from toolchain.runners.qemu_system import board_command
    from toolchain.target.profile import load_target

    port = free_port()
    board = subprocess.Popen([*board_command(load_target(target).emulator["command"], command_line),
                              "-S", "-gdb", f"tcp:127.0.0.1:{port}"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while True:  # until the gdbstub listens (a connection that says nothing leaves the board halted)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert board.poll() is None and time.monotonic() < deadline, board.communicate()
                time.sleep(0.05)
        yield port, board
    finally:
        board.kill()
        board.communicate()


@pytest.mark.parametrize("target", EMULATED_BOARDS)
def test_gdb_probe_writes_a_build_that_runs_on_the_emulated_board(firmware, tmp_path, target):
    """invoke flash --probe gdb writes the build's emulator image into a board that holds no firmware; resumed,
    the harness runs the bundle protocol through semihosting and answers exactly what it answers when qemu
    loads the image itself (the run the build validated against the model)."""
    from toolchain import runners
    from toolchain.target.profile import load_target

    out = firmware(target)
    bundle_dir = out / BUNDLE
    manifest = read_manifest(bundle_dir)
    x = np.random.default_rng(2).standard_normal((3, *manifest["inputs"][0]["shape"])).astype(np.float32)
    (want,) = runners.run_bundle(runners.get("qemu-system"), load_target(target), bundle_dir, manifest, [x]).outputs
    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    in_dir.mkdir()
    out_dir.mkdir()
    x.tofile(in_dir / "input0.bin")
    with emulated_board(target, ["firmware-qemu.elf", str(in_dir), str(out_dir), str(len(x)), "0", "0"]) as (port,
                                                                                                           board):
        result = invoke("flash", "--target", target, "--out", str(out), "--probe", "gdb",
                        "--gdb-server", f"127.0.0.1:{port}", "--image", "emulator")
        assert result.returncode == 0, result.stderr
        assert "verified: 5 sections" in result.stdout and "sha256 equals the image's" in result.stdout
        stdout, stderr = board.communicate(timeout=120)  # detached: the harness runs to its exit
    assert board.returncode == 0, stdout + stderr
    assert "samples: 3" in stdout
    got = np.fromfile(out_dir / "output0.bin", dtype=manifest["outputs"][0]["dtype"]).reshape(want.shape)
    assert np.array_equal(got, want)


def test_image_the_server_does_not_hold_fails_verification_and_leaves_the_core_halted(firmware):
    """The board image is linked at 0x08000000, where qemu's mps2-an386 has no memory: the server takes the
    writes and reads back something else, which is a sentence and a failure, not a running board."""
    from toolchain.elf import ElfImage

    image = firmware(BOARD) / BUNDLE / "firmware.elf"
    with emulated_board(BOARD, ["firmware.elf", "in", "out", "1", "0", "0"]) as (port, board):
        with pytest.raises(BuildError, match=r"^flashing firmware.elf through the GDB server at 127.0.0.1:\d+ failed "
                                             r"with exit status 1: compare-sections found .vectors, .text, .*"
                                             r"different from firmware.elf after writing\.$"):
            flash(BOARD, firmware(BOARD), "gdb", gdb_server=f"127.0.0.1:{port}")
        time.sleep(0.5)
        # Still halted where load left it, at the entry point: a resumed core would have moved on.
        where = subprocess.run(["gdb-multiarch", "-nx", "-batch", "-ex", f"target remote 127.0.0.1:{port}",
                                "-ex", "printf \"pc=%x\\n\", $pc", str(image)], capture_output=True, text=True, timeout=30)
        assert f"pc={ElfImage(image).entry & ~1:x}" in where.stdout.splitlines(), where.stdout + where.stderr


def test_tampered_firmware_is_refused_before_connecting(firmware, tmp_path):
    copy = tmp_path / "out"
    shutil.copytree(firmware(BOARD), copy)
    image = copy / BUNDLE / "firmware-qemu.elf"
    data = bytearray(image.read_bytes())
    data[0x1000] ^= 0xFF  # one byte of the vector table
    image.write_bytes(data)
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        with pytest.raises(BuildError, match=r"firmware-qemu.elf does not match its sha256 in manifest.json"):
            flash(BOARD, copy, "gdb", image="emulator", gdb_server=f"127.0.0.1:{server.getsockname()[1]}")
        with pytest.raises(BlockingIOError):  # nobody came
            server.accept()


def test_a_port_where_nothing_listens_fails_with_a_sentence_within_seconds(firmware):
    port = free_port()
    start = time.monotonic()
    result = invoke("flash", "--target", BOARD, "--out", str(firmware(BOARD)), "--probe", "gdb",
                    "--gdb-server", f"127.0.0.1:{port}", "--image", "emulator")
    assert result.returncode == 1
    assert result.stderr.strip() == (f"error: flashing firmware-qemu.elf through the GDB server at 127.0.0.1:{port} "
                                     f"failed with exit status 1: 127.0.0.1:{port}: Connection refused.")
    assert time.monotonic() - start < 15


def test_gdb_dry_run_prints_the_command_and_the_script(firmware):
    from toolchain.elf import ElfImage

    out = firmware(BOARD)
    result = invoke("flash", "--target", BOARD, "--out", str(out), "--probe", "gdb", "--gdb-server",
                    "192.168.7.2:3333", "--dry-run")
    assert result.returncode == 0, result.stderr
    image = (out / BUNDLE / "firmware.elf").resolve()
    lines = result.stdout.splitlines()
    assert lines[0] == f"gdb-multiarch -nx -batch -x flash.gdb {image}"
    assert "target extended-remote 192.168.7.2:3333" in lines and "load" in lines and "detach" in lines
    vectors = next(s for s in ElfImage(image).loaded_sections() if s.name == ".vectors")
    assert vectors.address == 0x08000000 and f"set $sp = 0x{int.from_bytes(vectors.content[:4], 'little'):08x}" in lines
    assert lines[-1].startswith("would verify: 5 sections")
